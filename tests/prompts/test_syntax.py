"""A1111's attention syntax: its parse_prompt_attention's documented examples, and the bad
inputs the README names (unbalanced brackets, a weight that is not a number)."""

import pytest

from ldm.prompts.syntax import Fragment, check_prompt_syntax, parse_attention, plain_fragments


def flat(prompt: str) -> list[list]:
    """One list of [text, weight] with ["BREAK", -1] between segments, as A1111 writes its result."""
    out = []
    for i, segment in enumerate(parse_attention(prompt)):
        if i:
            out.append(["BREAK", -1])
        out += [[text, weight] for text, weight in segment]
    return out


# A1111's doctests of parse_prompt_attention (modules/prompt_parser.py), exact floats included.
DOCUMENTED = {
    "normal text": [["normal text", 1.0]],
    "an (important) word": [["an ", 1.0], ["important", 1.1], [" word", 1.0]],
    "(unbalanced": [["unbalanced", 1.1]],
    "\\(literal\\]": [["(literal]", 1.0]],
    "(unnecessary)(parens)": [["unnecessaryparens", 1.1]],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        ["a ", 1.0],
        ["house", 1.5730000000000004],
        [" ", 1.1],
        ["on", 1.0],
        [" a ", 1.1],
        ["hill", 0.55],
        [", sun, ", 1.1],
        ["sky", 1.4641000000000006],
        [".", 1.1],
    ],
}


@pytest.mark.parametrize("prompt", DOCUMENTED)
def test_a1111s_documented_examples(prompt):
    assert flat(prompt) == DOCUMENTED[prompt]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a ((tuxedo))", [["a ", 1.0], ["tuxedo", 1.1 * 1.1]]),  # the wiki: ((tuxedo)) is (tuxedo:1.21)
        ("a (tuxedo:1.21)", [["a ", 1.0], ["tuxedo", 1.21]]),
        ("[blurry]", [["blurry", 1 / 1.1]]),
        ("[[blurry]]", [["blurry", 1 / 1.1 / 1.1]]),
        ("(masterpiece:1.2), [blurry]", [["masterpiece", 1.2], [", ", 1.0], ["blurry", 1 / 1.1]]),
        ("((a:1.5) b)", [["a", 1.5 * 1.1], [" b", 1.1]]),
        ("(a:-0.5)", [["a", -0.5]]),
        ("a \\\\ b", [["a \\ b", 1.0]]),  # an escaped backslash
        ("a \\b", [["a b", 1.0]]),  # a lone backslash is dropped, as A1111
        ("", [["", 1.0]]),
    ],
)
def test_weights_nesting_and_escapes(prompt, expected):
    assert flat(prompt) == expected


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a) b] c", [["a) b] c", 1.0]]),  # closing brackets with nothing open are text
        ("a [b", [["a ", 1.0], ["b", 1 / 1.1]]),  # an open bracket weighs the rest
        ("((a)", [["a", 1.1 * 1.1]]),
        ("(a:x)", [["a:x", 1.1]]),  # not a number: the colon and the word are text, the parentheses x1.1
        ("(a:1.2.3)", [["a:1.2.3)", 1.1]]),  # two decimal points: text (A1111 fails here)
        ("(a:)", [["a:", 1.1]]),
        ("a:1.5)", [["a:1.5)", 1.0]]),  # a weight with no open parenthesis is text
    ],
)
def test_bad_input_is_read_as_a1111_reads_it(prompt, expected):
    assert flat(prompt) == expected


def test_break_starts_a_new_segment_and_eats_the_spaces_around_it():
    assert parse_attention("a cat BREAK a dog") == [[Fragment("a cat", 1.0)], [Fragment("a dog", 1.0)]]
    assert parse_attention("(red:1.5) BREAK blue") == [[Fragment("red", 1.5), Fragment("", 1.0)], [Fragment("blue", 1.0)]]
    assert flat("BREAKING news, BREAK") == [["BREAKING news,", 1.0], ["BREAK", -1], ["", 1.0]]  # a word, then the mark
    assert flat("break") == [["break", 1.0]]  # only the capitals


def test_break_inside_brackets_still_breaks():
    """A1111 weighs its marker there and then reads "BREAK" as a word of weight -1.1; we break."""
    assert parse_attention("(a BREAK b)") == [[Fragment("a", 1.1)], [Fragment("b", 1.1)]]


def test_plain_fragments_and_syntax_names():
    assert plain_fragments("(a:1.2)") == [[Fragment("(a:1.2)", 1.0)]]
    assert check_prompt_syntax("plain") == "plain"
    with pytest.raises(ValueError, match="one of a1111, plain, got 'compel'"):
        check_prompt_syntax("compel")
