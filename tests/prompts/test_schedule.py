"""Prompt editing and alternation: A1111's documented examples (its doctests of
get_learned_conditioning_prompt_schedules, and the wiki's), and bad input."""

import pytest

from ldm.prompts.schedule import prompt_schedule, switch_step


def at10(prompt: str) -> list[list]:
    return [[step, text] for step, text in prompt_schedule(prompt, 10)]


# A1111's doctests, 10 steps.
DOCUMENTED = {
    "test": [[10, "test"]],
    "a [b:3]": [[3, "a "], [10, "a b"]],
    "a [b: 3]": [[3, "a "], [10, "a b"]],
    "a [[[b]]:2]": [[2, "a "], [10, "a [[b]]"]],
    "[(a:2):3]": [[3, ""], [10, "(a:2)"]],
    "a [b : c : 1] d": [[1, "a b  d"], [10, "a  c  d"]],
    "a[b:[c:d:2]:1]e": [[1, "abe"], [2, "ace"], [10, "ade"]],
    "a [unbalanced": [[10, "a [unbalanced"]],
    "a [b:.5] c": [[5, "a  c"], [10, "a b c"]],
    "((a][:b:c [d:3]": [[3, "((a][:b:c "], [10, "((a][:b:c d"]],
    "[a|(b:1.1)]": [[step, "a" if step % 2 else "(b:1.1)"] for step in range(1, 11)],
    "[fe|]male": [[step, "female" if step % 2 else "male"] for step in range(1, 11)],
    "[fe|||]male": [[step, "female" if step % 4 == 1 else "male"] for step in range(1, 11)],
}


@pytest.mark.parametrize("prompt", DOCUMENTED)
def test_a1111s_documented_examples(prompt):
    assert at10(prompt) == DOCUMENTED[prompt]


def test_the_wikis_example_with_several_edits():
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_the_wikis_step_number_and_alternation():
    assert prompt_schedule("a [fantasy:cyberpunk:16] landscape", 20) == [
        (16, "a fantasy landscape"),
        (20, "a cyberpunk landscape"),
    ]
    assert [text for _, text in prompt_schedule("[cow|horse] in a field", 4)] == [
        "cow in a field", "horse in a field", "cow in a field", "horse in a field",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "when, step",
    [("0.25", 5), (".5", 10), ("1.0", 20), ("2.5", 20), ("3", 3), ("25", 20), ("0", 0), ("-1", -1), ("1e1", 10)],
)
def test_a_decimal_point_makes_a_share_of_the_steps(when, step):
    """A1111's default timeline (>= 1.6): 1.0 is the whole run, 2.5 past its end."""
    assert switch_step(when, 20) == step


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a [b:c:2.5]", [[10, "a b"]]),  # 250% of the steps: past the end, `from` throughout
        ("a [b:c:0]", [[10, "a c"]]),  # at step 0: `to` throughout
        ("a [b:c:x]", [[10, "a [b:c:x]"]]),  # not a number: text (the emphasis syntax reads it next)
        ("a [b:c:3", [[10, "a [b:c:3"]]),  # unbalanced: text
        ("a | b [c:d:3]", [[10, "a | b [c:d:3]"]]),  # a | outside brackets: all text, as A1111's grammar fails
        ("a [b:c:3] \\", [[10, "a [b:c:3] \\"]]),  # so does a lone backslash at the end
        ("\\[b:c:3\\]", [[10, "\\[b:c:3\\]"]]),  # escaped brackets are text
    ],
)
def test_bad_input(prompt, expected):
    assert at10(prompt) == expected
