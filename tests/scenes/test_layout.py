"""Layout maps: drawn from the scene's own shapes, they show exactly the regions its attributes say."""

import numpy as np
from PIL import Image

from ldm.scenes.draw import SUN_COLOURS, draw_scene, draw_scene_with_layout
from ldm.scenes.generator import (
    SceneAttributes,
    make_scene,
    scene_attributes,
    scene_seed,
)
from ldm.scenes.layout import REGIONS, layout_image, layout_labels, scene_layout
from tool_scripts import load_tool


def regions(labels) -> set[str]:
    return {REGIONS[i] for i in np.unique(labels)}


def test_the_scene_is_drawn_as_without_a_layout():
    for seed in range(8):
        attrs = scene_attributes(seed)
        scene, _ = draw_scene_with_layout(attrs, seed, 48)
        assert scene.tobytes() == draw_scene(attrs, seed, 48).tobytes()
        assert scene.tobytes() == make_scene(seed, 48)[0].tobytes()


def test_the_regions_are_the_attributes():
    for seed in range(40):
        attrs = scene_attributes(seed)
        _, labels = draw_scene_with_layout(attrs, seed, 64)
        present = regions(labels)
        assert ("mountains" in present) == attrs.mountains, attrs
        assert ("house" in present) == attrs.house, attrs
        assert ("tree" in present) == (attrs.trees > 0), attrs
        assert ("water" in present) == (attrs.setting == "lake"), attrs
        for body in ("sun", "moon"):
            assert (body in present) == (attrs.celestial == body), attrs
        assert {"sky", "ground"} <= present


def test_the_sun_region_is_where_the_sun_is_drawn():
    attrs = SceneAttributes("noon", "meadow", celestial="sun", celestial_position="left")
    scene, labels = draw_scene_with_layout(attrs, 0, 128)
    pixels = np.asarray(scene, dtype=np.int16)
    sun = labels == REGIONS.index("sun")
    inside = sun & np.roll(sun, 2, 0) & np.roll(sun, -2, 0) & np.roll(sun, 2, 1) & np.roll(sun, -2, 1)
    assert inside.sum() > 20
    assert np.abs(pixels[inside] - SUN_COLOURS["noon"]).max() <= 8
    assert np.abs(pixels[~sun & (labels == REGIONS.index("sky"))] - SUN_COLOURS["noon"]).sum(-1).min() > 0


def test_colour_map_round_trips():
    _, layout = scene_layout(5, 64)
    labels = layout_labels(layout)
    assert np.array_equal(np.asarray(layout_image(labels)), np.asarray(layout))


def test_make_scenes_writes_control_maps_beside_the_scenes_not_among_them(tmp_path):
    from ldm.data import build_dataset
    from ldm.data.config import DataConfig

    module = load_tool("make_scenes.py", "make_scenes_for_layout")
    out = tmp_path / "scenes"
    assert module.main([str(out), "--n", "3", "--size", "32", "--seed", "4", "--control-maps"]) == 0
    for index in range(3):
        key = f"{index:08d}"
        _, expected = scene_layout(scene_seed(4, index), 32, "train")
        assert Image.open(tmp_path / "scenes-control" / "layout" / f"{key}.png").tobytes() == expected.tobytes()
        assert (tmp_path / "scenes-control" / "canny" / f"{key}.png").is_file()
    # The maps are outside the image folder: not listed, read or counted as (uncaptioned) images.
    dataset = build_dataset(DataConfig(path=str(out), resolution=32, caption_dropout=0.0))
    assert sorted(sample["key"] for sample in dataset) == [f"{i:08d}.png" for i in range(3)]
    assert "0 skipped" in dataset.stats.summary()
    assert not (out / "control").exists()
