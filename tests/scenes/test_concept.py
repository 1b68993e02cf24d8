"""A concept the built-in model never saw (the windmill): scenes with it, their captions, the
judge's head for it and the prompts that ask for it; ordinary scenes stay exactly as they were."""

import dataclasses
import json

import numpy as np
import pytest

from ldm.control.layout_map import REGIONS
from ldm.scenes.attribute_classifier import CONCEPT_HEADS, HEADS, AttributeClassifier, ClassifierConfig
from ldm.scenes.classifier_training import render_scenes
from ldm.scenes.draw import draw_scene_with_layout
from ldm.scenes.generator import WINDMILL_WORDS, make_scene, scene_attributes, scene_caption, scene_seed
from ldm.scenes.prompts import build_prompts
from tool_scripts import load_tool


def test_a_concept_scene_is_the_same_scene_with_a_windmill_added():
    """Everything but the windmill is drawn from the same random draws: pixels change only around
    the windmill (lakes, whose reflection repeats it, are left out)."""
    for index in range(12):
        seed = scene_seed(0, index)
        plain, attrs = make_scene(seed, 128, "train")
        if attrs.setting == "lake":
            continue
        concept, concept_attrs = make_scene(seed, 128, "train", "windmill")
        assert concept_attrs == dataclasses.replace(attrs, windmill=True)
        _, labels = draw_scene_with_layout(concept_attrs, seed, 128)
        windmill = labels == REGIONS.index("windmill")
        assert windmill.sum() > 40  # a visible object at 128 px
        changed = np.abs(np.asarray(concept, dtype=int) - np.asarray(plain, dtype=int)).max(-1) > 0
        rows, columns = np.nonzero(windmill)
        near = np.zeros_like(windmill)  # the windmill's box, and the pixels its antialiased edge reaches
        near[max(rows.min() - 4, 0) : rows.max() + 5, max(columns.min() - 4, 0) : columns.max() + 5] = True
        assert changed.any() and not (changed & ~near).any()


def test_captions_name_the_windmill_and_ordinary_captions_keep_their_words():
    for index in range(20):
        seed = scene_seed(0, index)
        attrs = scene_attributes(seed, "train")
        with_windmill = scene_caption(seed, dataclasses.replace(attrs, windmill=True))
        assert any(word in with_windmill for word in WINDMILL_WORDS)
        assert not any(word in scene_caption(seed, attrs) for word in WINDMILL_WORDS)
        assert "windmill" not in attrs.to_dict()  # ordinary records carry no concept keys
    with pytest.raises(ValueError, match="concept must be one of"):
        scene_attributes(1, "train", "sailboat")


def test_make_scenes_concept_writes_scenes_that_all_show_it(tmp_path):
    tool = load_tool("make_scenes.py", "make_scenes_concept")
    assert tool.main([str(tmp_path / "wm"), "--n", "4", "--size", "32", "--concept", "windmill", "--seed", "7"]) == 0
    records = [json.loads(line) for line in (tmp_path / "wm" / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["attributes"]["windmill"] and "windmill" in r["text"] for r in records)
    # A share: the others are the plain scenes of the same seeds (the model's prior, kept).
    args = [str(tmp_path / "half"), "--n", "12", "--size", "32", "--seed", "7", "--concept", "windmill", "--concept-share", "0.5"]
    assert tool.main(args) == 0
    assert tool.main([str(tmp_path / "plain"), "--n", "12", "--size", "32", "--seed", "7"]) == 0
    half, plain = ([json.loads(line) for line in (tmp_path / name / "metadata.jsonl").read_text().splitlines()] for name in ("half", "plain"))
    shown = [r["attributes"].get("windmill", False) for r in half]
    assert 0 < sum(shown) < 12
    assert all(h == p for h, p, s in zip(half, plain, shown) if not s)


def test_the_judge_learns_the_concept_from_a_share_of_its_scenes():
    model = AttributeClassifier(ClassifierConfig(input_size=32, heads={**HEADS, **CONCEPT_HEADS}))
    _, labels = render_scenes(model, 40, dataset_seed=3, size=32, concept="windmill", concept_share=0.5)
    shown = labels[:, list(model.config.heads).index("windmill")]
    assert 0.2 < shown.float().mean() < 0.8  # about half show it, labelled "yes"
    _, plain = render_scenes(model, 40, dataset_seed=3, size=32)
    assert plain[:, -1].sum() == 0


def test_windmill_prompts_ask_for_it_on_the_seen_pairs():
    prompts = build_prompts("windmill", per_pair=2)
    assert len(prompts) == len(build_prompts("seen", per_pair=2))
    assert all(p.asserts["windmill"] == "yes" and p.split == "seen" and "windmill" in p.text for p in prompts)


def test_the_report_has_a_row_for_the_concept():
    from ldm.scenes.report import accuracy_table

    def group(per_attribute):
        return {"per_attribute": per_attribute, "overall": 0.5, "all_correct": 0.0, "images": 4}

    seen = group({"setting": {"accuracy": 1.0, "checked": 4}, "windmill": {"accuracy": 0.25, "checked": 4}})
    accuracy = {"seen": seen, "heldout": group({}), "all": seen}
    lines = accuracy_table({"generated": {"accuracy": accuracy}, "real": {"accuracy": accuracy}})
    assert any(line.startswith("| windmill | 25.0% (4) |") for line in lines)
