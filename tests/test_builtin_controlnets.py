"""The built-in scenes model's ControlNets: shipped, small, and steering what they are meant to."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.builtin_models import resolve_model
from ldm.control.layout_map import layout_labels
from ldm.control.library import ControlNets
from ldm.control.units import ControlUnit
from ldm.images import from_pil
from ldm.pipeline import Pipeline
from ldm.scenes.control_metrics import RegionIoU
from ldm.scenes.layout_segmenter import DEFAULT_SEGMENTER_PATH, load_segmenter

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "docs" / "layout-example.png"  # a meadow at dusk: two trees, mountains, a house, the sun on the left
PROMPT = "a meadow at dusk with two trees, mountains, a house and the sun on the left"


def test_the_scenes_model_ships_a_layout_and_a_canny_controlnet_of_at_most_8_mb():
    entries = ControlNets.for_model(resolve_model("scenes")).entries
    assert {(entry.name, entry.type) for entry in entries} == {("layout", "layout"), ("canny", "canny")}
    for entry in entries:
        assert sum(f.stat().st_size for f in entry.path.iterdir()) <= 8 * 10**6, entry.name


@pytest.fixture(scope="module")
def scenes():
    return Pipeline.load("scenes")


def region_miou(image: Image.Image, regions: np.ndarray) -> float:
    score = RegionIoU(9)
    score.add(load_segmenter(DEFAULT_SEGMENTER_PATH).predict(from_pil([image]))[0].numpy(), regions)
    return score.mean()


def test_the_layout_controlnet_puts_the_regions_where_the_map_has_them(scenes):
    """The same prompt and seeds with and without the map: the segmenter finds the map's
    regions in the steered images far better."""
    regions = layout_labels(Image.open(EXAMPLE))
    options = dict(steps=20, seed=3, n=2, progress=False)
    steered = scenes.generate(PROMPT, controls=(ControlUnit(Image.open(EXAMPLE), "layout"),), **options).images
    plain = scenes.generate(PROMPT, **options).images
    with_map = np.mean([region_miou(image, regions) for image in steered])
    without = np.mean([region_miou(image, regions) for image in plain])
    assert with_map > without + 0.1, (with_map, without)


def test_the_canny_controlnet_follows_edges_taken_from_a_picture(scenes):
    """Edges from any picture (here a drawn scene, through the canny preprocessor) steer it:
    the steered image's own edges lie closer to them than the unsteered image's do."""
    import random

    from ldm.control.preprocessors import canny
    from ldm.scenes.control_metrics import edge_f1
    from ldm.scenes.generator import caption, scene_attributes
    from ldm.scenes.layout import scene_layout

    picture, _ = scene_layout(7, 128)
    prompt = caption(scene_attributes(7, "all"), random.Random(0))
    truth = np.asarray(canny(picture).convert("L")) > 0
    options = dict(steps=20, seed=5, n=2, progress=False)
    steered = scenes.generate(prompt, controls=(ControlUnit(picture, "canny"),), **options).images
    plain = scenes.generate(prompt, **options).images

    def f1(image):
        return edge_f1(np.asarray(canny(image).convert("L")) > 0, truth)

    assert np.mean([f1(i) for i in steered]) > np.mean([f1(i) for i in plain]) + 0.05


def test_ldm_generate_with_the_built_in_layout_controlnet(tmp_path):
    from ldm.cli.generate import main
    from ldm.png_info import parse_parameters

    out = tmp_path / "lake.png"
    assert main([PROMPT, "--control", str(EXAMPLE), "--control-type", "layout", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    assert parse_parameters(Image.open(out).text["parameters"])["ControlNet 0"].startswith("Module: layout, Model: layout, Weight: 1")
