"""Control types: canny (OpenCV), layout (snapped to the scenes palette), raw."""

import numpy as np
from PIL import Image, ImageFilter

from ldm.control.preprocessors import PREPROCESSORS, control_image
from ldm.control.units import CONTROL_TYPES, ControlUnit, check_control_units
from ldm.scenes.layout import COLOURS, layout_labels, scene_layout


def test_every_control_type_has_a_preprocessor():
    assert tuple(PREPROCESSORS) == CONTROL_TYPES


def test_canny_draws_the_squares_border_only():
    picture = Image.new("RGB", (64, 64))
    picture.paste((255, 255, 255), (16, 16, 48, 48))
    edges = np.asarray(control_image("canny", picture))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    on = edges[..., 0] == 255
    ys, xs = np.nonzero(on)
    assert ys.min() >= 15 and ys.max() <= 48 and xs.min() >= 15 and xs.max() <= 48
    assert not on[20:44, 20:44].any() and not on[:12].any()  # nothing inside or far outside
    assert on[16:48, 16].sum() + on[16:48, 15].sum() >= 30  # the left side is traced


def test_layout_snaps_a_blurred_resized_map_back_to_region_colours():
    _, layout = scene_layout(3, 64)
    smudged = layout.resize((96, 96), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1)).resize((64, 64))
    snapped = np.asarray(control_image("layout", smudged))
    palette = {tuple(c) for c in COLOURS.values()}
    assert {tuple(p) for p in snapped.reshape(-1, 3)} <= palette
    agree = (layout_labels(Image.fromarray(snapped)) == layout_labels(layout)).mean()
    assert agree > 0.95


def test_raw_is_the_picture_itself(photo):
    assert np.array_equal(np.asarray(control_image("raw", photo)), np.asarray(photo))


def test_unit_checks_name_the_bad_unit():
    good = ControlUnit(None, "canny")
    for unit, message in [
        (ControlUnit(None, "pose"), "control 1: unknown control type 'pose'"),
        (ControlUnit(None, scale=float("nan")), "control 1: control scale must be a finite number >= 0, got nan"),
        (ControlUnit(None, start=-0.1), "control 1: control start must be between 0 and 1, got -0.1"),
        (ControlUnit(None, end=1.5), "control 1: control end must be between 0 and 1, got 1.5"),
    ]:
        try:
            check_control_units([good, unit])
        except ValueError as error:
            assert str(error).startswith(message), error
        else:
            raise AssertionError(f"{unit} passed")
