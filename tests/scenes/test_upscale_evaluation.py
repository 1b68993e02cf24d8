"""The upscaler evaluation's figures on small cases (edge F1's tolerance, bicubic against
nearest on a smooth picture) and tools/evaluate_upscaler.py end to end on a tiny upscaler."""

import json

import numpy as np
from PIL import Image
from tiny import build_tiny_upscaler
from tool_scripts import load_tool

from ldm.formats.model_folder import save_model
from ldm.scenes import upscale_evaluation
from ldm.scenes.upscale_evaluation import Scene, edges, evaluate_method, held_out_scenes, picture_scores, resize_method
from ldm.scenes.control_metrics import edge_f1

evaluate_upscaler = load_tool("evaluate_upscaler.py", "evaluate_upscaler")


def squares(offset: int = 0, size: int = 64) -> Image.Image:
    picture = np.zeros((size, size, 3), np.uint8)
    picture[16 + offset : 40 + offset, 20:44] = 255
    return Image.fromarray(picture)


def test_edge_f1_of_a_picture_against_itself_and_shifted_copies():
    truth = edges(squares())
    assert truth.any()
    assert edge_f1(truth, truth) == 1.0
    assert edge_f1(edges(squares(2)), truth) == 1.0  # within the 2 px tolerance
    assert edge_f1(edges(squares(8)), truth) < 0.7  # the horizontal edges far off


def test_bicubic_beats_nearest_on_a_smooth_picture():
    y, x = np.mgrid[0:128, 0:128] / 128
    smooth = Image.fromarray((255 * np.stack([np.sin(3 * x) ** 2, np.cos(2 * y) ** 2, x * y], axis=-1)).astype(np.uint8))
    scene = Scene(smooth, smooth.resize((32, 32), Image.BICUBIC), "")
    bicubic = evaluate_method(resize_method(Image.BICUBIC, 128), [scene])
    nearest = evaluate_method(resize_method(Image.NEAREST, 128), [scene])
    assert bicubic["psnr"] > nearest["psnr"] + 3 and bicubic["ssim"] > nearest["ssim"]
    assert picture_scores(smooth, smooth)["ssim"] > 0.999


def test_held_out_scenes_are_drawn_at_512_and_downscaled_to_128():
    scene = held_out_scenes(1)[0]
    assert scene.truth.size == (512, 512) and scene.low.size == (128, 128) and scene.caption


def test_the_tool_scores_an_upscaler_beside_the_baselines(tmp_path, monkeypatch, capsys):
    folder = save_model(build_tiny_upscaler(), tmp_path / "up")
    small = [Scene(squares(size=64), squares(size=64).resize((16, 16), Image.BICUBIC), "a lake")]
    monkeypatch.setattr(upscale_evaluation, "HIGH", 64)
    monkeypatch.setattr(upscale_evaluation, "held_out_scenes", lambda n: small)
    assert evaluate_upscaler.main(["--model", str(folder), "--n", "1", "--steps", "2", "--out", str(tmp_path / "out")]) == 0
    figures = json.loads((tmp_path / "out" / "upscaler.json").read_text())["methods"]
    assert set(figures) == {"bicubic", "lanczos", str(folder)}
    assert figures["bicubic"]["edge_f1_x_bicubic"] == 1.0
    assert "| bicubic |" in capsys.readouterr().out


def test_a_model_that_is_not_an_upscaler_is_a_one_line_error(tmp_path, tiny_components, capsys):
    folder = save_model(tiny_components, tmp_path / "plain")
    assert evaluate_upscaler.main(["--model", str(folder), "--n", "1", "--out", str(tmp_path / "out")]) == 2
    assert "is not an upscaler" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_judge_without_a_model_is_a_usage_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exited:
        evaluate_upscaler.main(["--judge", "2", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and "--judge N takes N >= 0 and goes with --model" in capsys.readouterr().err
