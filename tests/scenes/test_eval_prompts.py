"""Evaluation prompts (ldm/scenes/prompts.py): splits, and asserting only what is said."""

import json
import re

import pytest

from ldm.scenes.generator import (
    CLOUD_WORDS,
    HELD_OUT,
    HOUSE_WORDS,
    MOON_WORDS,
    MOUNTAIN_WORDS,
    POSITION_WORDS,
    SETTINGS,
    TIMES_OF_DAY,
    TREE_COUNT_WORDS,
    SceneAttributes,
)
from ldm.scenes.prompts import EvalPrompt, build_prompts, read_prompt_file, stated_attributes


def pair(prompt: EvalPrompt) -> tuple[str, str]:
    return prompt.scene.setting, prompt.scene.time_of_day


def mentions(text: str, phrases) -> bool:
    return any(re.search(rf"\b{re.escape(p)}\b", text) for p in phrases)


def test_seen_prompts_never_use_a_held_out_pair():
    prompts = build_prompts("seen", per_pair=3)
    assert prompts and all(pair(p) not in HELD_OUT and p.split == "seen" for p in prompts)
    assert len({pair(p) for p in prompts}) == len(SETTINGS) * len(TIMES_OF_DAY) - len(HELD_OUT)


def test_held_out_prompts_use_only_held_out_pairs():
    prompts = build_prompts("heldout", per_pair=3)
    assert {pair(p) for p in prompts} == set(HELD_OUT)
    assert all(p.split == "heldout" for p in prompts) and len(prompts) == 3 * len(HELD_OUT)


def test_both_is_seen_then_held_out_and_fixed_by_the_seed():
    both = build_prompts("both", per_pair=2, seed=5)
    assert both == build_prompts("seen", 2, 5) + build_prompts("heldout", 2, 5)
    assert both == build_prompts("both", per_pair=2, seed=5)
    assert [p.text for p in both] != [p.text for p in build_prompts("both", per_pair=2, seed=6)]


def test_first_prompt_of_a_pair_asserts_only_time_and_setting():
    first = build_prompts("both", per_pair=2)[::2]
    assert all(set(p.asserts) == {"time_of_day", "setting"} for p in first)


def test_asserts_match_what_the_text_says():
    """Every asserted feature is named in the text and no unasserted one is."""
    prompts = build_prompts("both", per_pair=6)
    assert any(len(p.asserts) > 4 for p in prompts)  # features do get asserted
    for prompt in prompts:
        text, asserts = prompt.text, prompt.asserts
        assert ("mountains" in asserts) == mentions(text, MOUNTAIN_WORDS), text
        assert ("house" in asserts) == mentions(text, HOUSE_WORDS), text
        assert ("clouds" in asserts) == mentions(text, CLOUD_WORDS), text
        assert ("trees" in asserts) == mentions(text, ("tree", "trees")), text
        if "trees" in asserts:
            assert mentions(text, TREE_COUNT_WORDS[int(asserts["trees"])]), text
        assert ("celestial" in asserts) == ("celestial_position" in asserts) == mentions(text, ("sun", "moon")), text
        if "celestial" in asserts:
            assert (asserts["celestial"] == "moon") == mentions(text, MOON_WORDS), text
            assert mentions(text, POSITION_WORDS[asserts["celestial_position"]]), text


def test_stated_attributes_are_classifier_labels():
    scene = SceneAttributes("night", "meadow", trees=2, celestial="moon", celestial_position="left", house=True)
    assert stated_attributes(scene) == {
        "time_of_day": "night",
        "setting": "meadow",
        "trees": "2",
        "celestial": "moon",
        "celestial_position": "left",
        "house": "yes",
    }


def test_prompt_file_round_trips_and_reads_make_scenes_metadata(tmp_path):
    prompts = build_prompts("both", per_pair=2)
    ours = tmp_path / "prompts.jsonl"
    ours.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts) + "\n")
    assert read_prompt_file(ours) == prompts
    metadata = tmp_path / "metadata.jsonl"
    record = {"file_name": "0.png", "text": "a desert at night", "attributes": {"time_of_day": "night", "setting": "desert"}}
    metadata.write_text(json.dumps(record) + "\n")
    (prompt,) = read_prompt_file(metadata)
    assert prompt.text == "a desert at night" and prompt.split == "heldout"


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "prompts.jsonl:2: not JSON"),
        ('{"prompt": "x"}', "prompts.jsonl:2: expected"),
        ('{"prompt": "x", "attributes": {"time_of_day": "noon", "setting": "lake", "boats": 1}}', "unknown attribute 'boats'"),
        ('{"prompt": "x", "attributes": {"time_of_day": "noon", "setting": "sea"}}', "setting must be one of"),
        ('{"prompt": "x", "attributes": {"setting": "lake"}}', "prompts.jsonl:2: .*time_of_day"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a lake", "attributes": {"time_of_day": "noon", "setting": "lake"}}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_prompt_file(path)
