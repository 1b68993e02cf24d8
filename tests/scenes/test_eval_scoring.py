"""Scoring (ldm/scenes/scoring.py): only what a prompt asserts is counted."""

import pytest

from ldm.scenes.generator import SceneAttributes
from ldm.scenes.attribute_classifier import scene_labels
from ldm.scenes.prompts import EvalPrompt
from ldm.scenes.scoring import score_predictions

BARE_SEEN = EvalPrompt("a lake at dawn", SceneAttributes("dawn", "lake"))
TREES_SEEN = EvalPrompt("two trees in a meadow at noon", SceneAttributes("noon", "meadow", trees=2))
HELD_OUT = EvalPrompt("a desert at night", SceneAttributes("night", "desert"))


def reading(scene: SceneAttributes, **wrong) -> dict[str, str]:
    """A fake classifier output: right about `scene` except for the `wrong` labels."""
    return {**scene_labels(scene), **wrong}


def test_unasserted_attributes_are_never_counted():
    # Mountains and a house appear in the image of "a lake at dawn": not stated, not scored.
    scores = score_predictions([BARE_SEEN], [[reading(BARE_SEEN.scene, mountains="yes", house="yes", trees="3")]])
    seen = scores["seen"]
    assert set(seen["per_attribute"]) == {"time_of_day", "setting"}
    assert seen["overall"] == 1.0 and seen["all_correct"] == 1.0 and seen["checks"] == 2


def test_asserted_attributes_count_right_and_wrong():
    predictions = [
        [reading(TREES_SEEN.scene), reading(TREES_SEEN.scene, trees="1"), reading(TREES_SEEN.scene, time_of_day="dusk")],
    ]
    seen = score_predictions([TREES_SEEN], predictions)["seen"]
    assert seen["per_attribute"]["trees"] == {"accuracy": pytest.approx(2 / 3), "right": 2, "checked": 3}
    assert seen["per_attribute"]["time_of_day"]["right"] == 2
    assert seen["per_attribute"]["setting"]["accuracy"] == 1.0
    assert seen["overall"] == pytest.approx(7 / 9)
    assert seen["all_correct"] == pytest.approx(1 / 3)
    assert seen["images"] == 3


def test_seen_and_held_out_are_scored_apart_and_together():
    predictions = [
        [reading(BARE_SEEN.scene)],
        [reading(HELD_OUT.scene, setting="snowfield"), reading(HELD_OUT.scene)],
    ]
    scores = score_predictions([BARE_SEEN, HELD_OUT], predictions)
    assert scores["seen"]["overall"] == 1.0 and scores["seen"]["images"] == 1
    assert scores["heldout"]["per_attribute"]["setting"]["accuracy"] == 0.5
    assert scores["heldout"]["overall"] == 0.75 and scores["heldout"]["all_correct"] == 0.5
    assert scores["all"]["images"] == 3 and scores["all"]["overall"] == pytest.approx(5 / 6)


def test_a_group_without_images_has_no_accuracy():
    scores = score_predictions([BARE_SEEN], [[reading(BARE_SEEN.scene)]])
    assert scores["heldout"] == {"per_attribute": {}, "overall": None, "all_correct": None, "images": 0, "checks": 0}


def test_prompt_and_prediction_counts_must_match():
    with pytest.raises(ValueError, match="2 prompts but predictions for 1"):
        score_predictions([BARE_SEEN, HELD_OUT], [[reading(BARE_SEEN.scene)]])
