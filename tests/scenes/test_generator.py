"""Tests for the procedural scenes dataset (ldm/scenes/generator.py) and tools/make_scenes.py."""

import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.scenes.draw import draw_scene
from ldm.scenes.generator import (
    CLOUD_WORDS,
    HELD_OUT,
    HOUSE_WORDS,
    POSITION_WORDS,
    SETTING_WORDS,
    SETTINGS,
    TIME_WORDS,
    TIMES_OF_DAY,
    TREE_COUNT_WORDS,
    SceneAttributes,
    caption,
    iter_scenes,
    make_scene,
    sample_attributes,
    scene_caption,
    scene_seed,
    split_pairs,
)
from tool_scripts import load_tool

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "make_scenes.py"


make_scenes = load_tool("make_scenes.py", "make_scenes")


def luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])


def scene(time_of_day="noon", setting="meadow", **features) -> SceneAttributes:
    return SceneAttributes(time_of_day=time_of_day, setting=setting, **features)


def with_celestial(time_of_day: str, position: str = "center") -> dict:
    return {"celestial": "moon" if time_of_day == "night" else "sun", "celestial_position": position}


def has_word(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_image_and_caption():
    image_a, attrs_a = make_scene(1234, size=64)
    image_b, attrs_b = make_scene(1234, size=64)
    assert attrs_a == attrs_b
    assert image_a.mode == "RGB" and image_a.size == (64, 64)
    assert image_a.tobytes() == image_b.tobytes()
    assert scene_caption(1234, attrs_a) == scene_caption(1234, attrs_b)


def test_any_example_can_be_regenerated_alone():
    examples = list(iter_scenes(4, seed=7, size=48, split="train"))
    assert [key for key, *_ in examples] == ["00000000", "00000001", "00000002", "00000003"]
    key, image, text, attrs = examples[3]
    alone_image, alone_attrs = make_scene(scene_seed(7, 3), size=48, split="train")
    assert alone_attrs == attrs
    assert alone_image.tobytes() == image.tobytes()
    assert scene_caption(scene_seed(7, 3), alone_attrs) == text


def test_different_seeds_give_different_scenes():
    images = [make_scene(seed, size=48)[0].tobytes() for seed in range(8)]
    assert len(set(images)) == 8
    # Same attributes, different seed: the details (clouds, ridges, tree spots) still change.
    attrs = scene("noon", "meadow", mountains=True, trees=2, clouds=True)
    assert draw_scene(attrs, 1, 48).tobytes() != draw_scene(attrs, 2, 48).tobytes()
    assert len({scene_seed(0, i) for i in range(100)} | {scene_seed(1, 0)}) == 101


def test_draws_any_size():
    for size in (32, 72, 128):
        image, _ = make_scene(5, size=size)
        assert image.size == (size, size)


# --- captions -------------------------------------------------------------------------------


def assert_caption_matches(text: str, attrs: SceneAttributes) -> None:
    for time_of_day, words in TIME_WORDS.items():
        mentioned = any(has_word(text, word) for word in words)
        assert mentioned == (time_of_day == attrs.time_of_day), (text, attrs)
    for setting, phrases in SETTING_WORDS.items():
        mentioned = any(phrase in text for phrase in phrases)
        assert mentioned == (setting == attrs.setting), (text, attrs)
    for count, words in TREE_COUNT_WORDS.items():
        noun = "tree" if count == 1 else "trees"
        mentioned = any(re.search(rf"\b{word} (pine )?{noun}\b", text) for word in words)
        assert mentioned == (count == attrs.trees), (text, attrs)
    assert ("tree" in text) == (attrs.trees > 0), (text, attrs)
    assert ("mountain" in text) == attrs.mountains, (text, attrs)
    assert any(phrase in text for phrase in HOUSE_WORDS) == attrs.house, (text, attrs)
    assert any(phrase in text for phrase in CLOUD_WORDS) == attrs.clouds, (text, attrs)
    assert has_word(text, "sun") == (attrs.celestial == "sun"), (text, attrs)
    assert has_word(text, "moon") == (attrs.celestial == "moon"), (text, attrs)
    for position, phrases in POSITION_WORDS.items():
        mentioned = any(phrase in text for phrase in phrases)
        assert mentioned == (attrs.celestial_position == position), (text, attrs)


def test_captions_name_time_setting_and_every_present_feature():
    rng = random.Random(0)
    for _ in range(400):
        attrs = sample_attributes(rng, split="all")
        assert_caption_matches(caption(attrs, rng), attrs)


def test_captions_use_counts_as_words():
    rng = random.Random(1)
    texts = {n: caption(scene("dusk", "meadow", trees=n), rng) for n in (1, 2, 3)}
    assert re.search(r"\b(a|one|a single) tree\b", texts[1])
    assert "two trees" in texts[2]
    assert "three trees" in texts[3]


def test_caption_wording_varies_but_is_fixed_by_the_rng():
    attrs = scene("night", "lake", trees=2, house=True, **with_celestial("night", "left"))
    texts = {caption(attrs, random.Random(seed)) for seed in range(60)}
    assert len(texts) >= 10
    assert len({text.split()[0] for text in texts}) >= 4  # several templates, not just synonyms
    for text in texts:
        assert_caption_matches(text, attrs)
    assert caption(attrs, random.Random(3)) == caption(attrs, random.Random(3))


# --- attributes and splits ------------------------------------------------------------------


def test_train_split_never_yields_held_out_pairs():
    rng = random.Random(0)
    pairs = {(a.setting, a.time_of_day) for a in (sample_attributes(rng, "train") for _ in range(500))}
    assert not pairs & HELD_OUT
    assert len(pairs) == len(SETTINGS) * len(TIMES_OF_DAY) - len(HELD_OUT)  # everything else appears


def test_heldout_split_yields_only_held_out_pairs():
    rng = random.Random(0)
    pairs = {(a.setting, a.time_of_day) for a in (sample_attributes(rng, "heldout") for _ in range(200))}
    assert pairs == set(HELD_OUT)
    examples = iter_scenes(12, seed=3, size=32, split="heldout")
    assert {(attrs.setting, attrs.time_of_day) for *_, attrs in examples} <= HELD_OUT


def test_all_split_covers_every_pair_and_unknown_split_is_rejected():
    rng = random.Random(0)
    pairs = {(a.setting, a.time_of_day) for a in (sample_attributes(rng, "all") for _ in range(500))}
    assert pairs == set(split_pairs("all")) and len(pairs) == 16
    with pytest.raises(ValueError):
        sample_attributes(rng, "test")


def test_sampled_features_vary():
    rng = random.Random(0)
    samples = [sample_attributes(rng, "all") for _ in range(400)]
    assert {a.trees for a in samples} == {0, 1, 2, 3}
    assert {a.celestial_position for a in samples} == {None, "left", "center", "right"}
    for field in ("mountains", "clouds", "house"):
        assert {getattr(a, field) for a in samples} == {True, False}
    assert all(a.trees == 0 for a in samples if a.setting == "desert")


@pytest.mark.parametrize(
    "bad",
    [
        {"time_of_day": "noon", "setting": "meadow", "celestial": "moon", "celestial_position": "left"},
        {"time_of_day": "night", "setting": "meadow", "celestial": "sun", "celestial_position": "left"},
        {"time_of_day": "noon", "setting": "meadow", "celestial": "sun"},
        {"time_of_day": "noon", "setting": "meadow", "celestial_position": "left"},
        {"time_of_day": "noon", "setting": "desert", "trees": 1},
        {"time_of_day": "noon", "setting": "meadow", "trees": 4},
        {"time_of_day": "teatime", "setting": "meadow"},
        {"time_of_day": "noon", "setting": "jungle"},
    ],
)
def test_inconsistent_attributes_are_rejected(bad):
    with pytest.raises(ValueError):
        SceneAttributes(**bad)


# --- what is drawn --------------------------------------------------------------------------


def test_night_sky_is_darker_than_noon_sky():
    for seed in range(4):
        for setting in ("meadow", "lake"):
            features = {"mountains": True, "clouds": seed % 2 == 0}
            noon = draw_scene(scene("noon", setting, **features, **with_celestial("noon")), seed, 64)
            night = draw_scene(scene("night", setting, **features, **with_celestial("night")), seed, 64)
            sky_rows = slice(0, 64 * 3 // 10)
            assert luminance(night)[sky_rows].mean() + 60 < luminance(noon)[sky_rows].mean()


def test_sky_colours_follow_the_time_of_day():
    def sky_colour(time_of_day, rows):
        image = draw_scene(scene(time_of_day, "meadow"), 0, 64)
        return np.asarray(image, dtype=np.float64)[rows].reshape(-1, 3).mean(axis=0)

    top, low = slice(0, 6), slice(26, 32)  # high sky; sky just above the horizon
    red, green, blue = sky_colour("noon", top)
    assert blue > red + 60 and blue > green  # bright blue
    red, green, blue = sky_colour("dawn", top)
    assert blue > red and blue > green  # blue-violet top ...
    red, green, blue = sky_colour("dawn", low)
    assert red > blue + 40  # ... over a pink-orange low sky
    red, green, blue = sky_colour("dusk", low)
    assert red > green + 80 and red > blue + 80  # deep orange
    assert sky_colour("night", top).max() < 60  # dark navy


def test_snowfield_ground_is_brighter_than_desert_and_meadow():
    ground_rows = slice(48, 64)
    for time_of_day in TIMES_OF_DAY:
        brightness = {
            setting: luminance(draw_scene(scene(time_of_day, setting), 3, 64))[ground_rows].mean()
            for setting in ("snowfield", "desert", "meadow")
        }
        assert brightness["snowfield"] > brightness["desert"] + 10, (time_of_day, brightness)
        assert brightness["snowfield"] > brightness["meadow"] + 10, (time_of_day, brightness)


def mirror_correlation(image: Image.Image) -> float:
    """Correlation of the lower half with the flipped upper half, after removing each row's
    mean so that plain vertical gradients (sky, ground) do not count as a reflection."""
    pixels = luminance(image)
    half = pixels.shape[0] // 2
    upper, lower = pixels[:half][::-1], pixels[half : 2 * half]
    upper = upper - upper.mean(axis=1, keepdims=True)
    lower = lower - lower.mean(axis=1, keepdims=True)
    return float((upper * lower).sum() / np.sqrt((upper**2).sum() * (lower**2).sum()))


def test_lake_mirrors_the_sky_and_features_meadow_does_not():
    for seed in range(4):
        for time_of_day in ("dawn", "noon", "night"):
            features = dict(mountains=True, trees=2, house=True, **with_celestial(time_of_day, "left"))
            lake = mirror_correlation(draw_scene(scene(time_of_day, "lake", **features), seed, 64))
            meadow = mirror_correlation(draw_scene(scene(time_of_day, "meadow", **features), seed, 64))
            assert lake > 0.8 and meadow < 0.5 and lake > meadow + 0.4, (seed, time_of_day, lake, meadow)


@pytest.mark.parametrize("time_of_day", ["noon", "night", "dusk"])
def test_sun_or_moon_is_drawn_where_the_caption_says(time_of_day):
    for expected, position in enumerate(("left", "center", "right")):
        attrs = scene(time_of_day, "desert", **with_celestial(time_of_day, position))
        sky = luminance(draw_scene(attrs, 0, 96))[:40]
        brightest_third = int(np.argmax(sky.mean(axis=0))) * 3 // 96
        assert brightest_third == expected, (position, brightest_third)


def test_each_feature_changes_the_picture():
    base = scene("noon", "meadow")
    plain = draw_scene(base, 0, 64).tobytes()
    for change in ({"trees": 2}, {"house": True}, {"mountains": True}, {"clouds": True}, with_celestial("noon")):
        assert draw_scene(dataclasses.replace(base, **change), 0, 64).tobytes() != plain, change


# --- command line ---------------------------------------------------------------------------


def test_cli_writes_an_imagefolder_with_metadata(tmp_path):
    out = tmp_path / "scenes"
    assert make_scenes.main([str(out), "--n", "6", "--size", "32", "--seed", "4", "--split", "train"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]  # no temp dirs left over
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert len(list(out.glob("*.png"))) == 6
    for index, line in enumerate(lines):
        record = json.loads(line)
        assert record["file_name"] == f"{index:08d}.png"
        attrs = SceneAttributes(**record["attributes"])
        assert (attrs.setting, attrs.time_of_day) not in HELD_OUT
        assert_caption_matches(record["text"], attrs)
        expected_image, expected_attrs = make_scene(scene_seed(4, index), 32, "train")
        assert attrs == expected_attrs
        assert record["text"] == scene_caption(scene_seed(4, index), attrs)
        with Image.open(out / record["file_name"]) as image:
            assert image.mode == "RGB" and image.tobytes() == expected_image.tobytes()


def test_cli_writes_webdataset_shards_readable_by_webdataset(tmp_path):
    import webdataset

    out = tmp_path / "shards"
    args = [str(out), "--n", "5", "--size", "32", "--format", "webdataset", "--shard-size", "2"]
    assert make_scenes.main(args) == 0
    shards = sorted(str(p) for p in out.iterdir())
    assert [Path(p).name for p in shards] == ["scenes-000000.tar", "scenes-000001.tar", "scenes-000002.tar"]
    samples = list(webdataset.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(5)]
    for index, sample in enumerate(samples):
        attrs = SceneAttributes(**sample["json"])
        assert sample["png"].size == (32, 32)
        assert sample["txt"] == scene_caption(scene_seed(0, index), attrs)
        assert_caption_matches(sample["txt"], attrs)


def test_cli_output_does_not_depend_on_worker_count(tmp_path):
    args = ["--n", "8", "--size", "32", "--seed", "9"]
    make_scenes.main([str(tmp_path / "one"), *args, "--workers", "1"])
    make_scenes.main([str(tmp_path / "two"), *args, "--workers", "2"])
    for name in ["metadata.jsonl"] + [f"{i:08d}.png" for i in range(8)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


@pytest.mark.parametrize(
    "bad_args",
    [["--n", "0"], ["--size", "100"], ["--size", "24"], ["--shard-size", "0"], ["--split", "test"]],
)
def test_cli_rejects_bad_values_with_one_line_and_leaves_nothing(tmp_path, capsys, bad_args):
    with pytest.raises(SystemExit) as exit_info:
        make_scenes.main([str(tmp_path / "out"), "--n", "3", "--size", "32", *bad_args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_non_empty_directory_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        make_scenes.main([str(out), "--n", "2", "--size", "32"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    assert make_scenes.main([str(out), "--n", "2", "--size", "32", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000000.png", "00000001.png", "metadata.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    render = make_scenes.render_example

    def fail_on_third(job):
        if job[1] == 2:
            raise RuntimeError("disk on fire")
        return render(job)

    monkeypatch.setattr(make_scenes, "render_example", fail_on_third)
    with pytest.raises(RuntimeError):
        make_scenes.main([str(tmp_path / "out"), "--n", "5", "--size", "32"])
    assert list(tmp_path.iterdir()) == []


def test_cli_script_reports_bad_input_without_a_traceback(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(TOOL), str(out), "--n", "-5"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "--n" in result.stderr
    assert list(tmp_path.iterdir()) == []
