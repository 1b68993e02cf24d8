"""Attribute accuracy of images against what their prompts assert.

Each image is checked only on the attributes its prompt states (`EvalPrompt.asserts`); an
attribute the prompt leaves unsaid is never counted, right or wrong. Figures per group
("seen", "heldout", and "all" prompts):

- per attribute: right / checked, over the images whose prompt asserts that attribute;
- overall: right / checked over every (image, asserted attribute) check of the group,
  so attributes stated more often weigh more (time of day and setting are in every prompt);
- all_correct: the fraction of images whose every assertion is right.
"""

from __future__ import annotations

from collections.abc import Sequence

from ldm.scenes.prompts import EvalPrompt

GROUPS = ("seen", "heldout", "all")


def score_predictions(prompts: Sequence[EvalPrompt], predictions: Sequence[Sequence[dict[str, str]]]) -> dict:
    """`predictions[p]` holds the classifier's labels for each image of `prompts[p]`.

    Returns {group: {"per_attribute": {name: {"accuracy", "right", "checked"}}, "overall",
    "all_correct", "images", "checks"}}; a group without images has accuracies of None.
    """
    if len(prompts) != len(predictions):
        raise ValueError(f"{len(prompts)} prompts but predictions for {len(predictions)}")
    tallies = {group: {"right": {}, "checked": {}, "images": 0, "all_correct": 0} for group in GROUPS}
    for prompt, labels_per_image in zip(prompts, predictions):
        asserts = prompt.asserts
        for labels in labels_per_image:
            hits = {name: labels[name] == wanted for name, wanted in asserts.items()}
            for group in (prompt.split, "all"):
                tally = tallies[group]
                tally["images"] += 1
                tally["all_correct"] += all(hits.values())
                for name, hit in hits.items():
                    tally["right"][name] = tally["right"].get(name, 0) + hit
                    tally["checked"][name] = tally["checked"].get(name, 0) + 1
    return {group: _summarise(tally) for group, tally in tallies.items()}


def _ratio(right: int, total: int) -> float | None:
    return right / total if total else None


def _summarise(tally: dict) -> dict:
    right, checked = tally["right"], tally["checked"]
    per_attribute = {
        name: {"accuracy": _ratio(right[name], checked[name]), "right": right[name], "checked": checked[name]}
        for name in checked
    }
    checks = sum(checked.values())
    return {
        "per_attribute": per_attribute,
        "overall": _ratio(sum(right.values()), checks),
        "all_correct": _ratio(tally["all_correct"], tally["images"]),
        "images": tally["images"],
        "checks": checks,
    }
