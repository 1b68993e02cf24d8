"""The control adherence evaluation: its two figures, the layout segmenter, and
tools/evaluate.py --control end to end on the tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.scenes.control_metrics import RegionIoU, edge_f1, mean_iou
from ldm.scenes.layout_segmenter import DEFAULT_SEGMENTER_PATH, LayoutSegmenter, SegmenterConfig, load_segmenter, save_segmenter
from ldm.models.weights import ModelError
from test_evaluate_tool import classifier_path, evaluate_tool, two_prompts  # noqa: F401 (fixtures)


def test_mean_iou_counts_each_region_present_in_either_map():
    truth = np.zeros((4, 4), np.uint8)
    truth[2:] = 1  # sky above, ground below
    assert mean_iou(truth, truth) == 1.0
    predicted = truth.copy()
    predicted[1] = 1  # the ground drawn one row too high: ground 8/12
    predicted[0, 0] = 5  # a house that is not there: 0; the sky keeps 3 of its 8 pixels: 3/8
    assert mean_iou(predicted, truth) == pytest.approx((3 / 8 + 8 / 12 + 0) / 3)


def test_region_iou_sums_each_region_over_all_images_before_dividing():
    """A small region missed in one image of two weighs as much as the sky: a per-image mean
    would let the easy image hide it."""
    empty_sky = np.zeros((4, 4), np.uint8)
    house = empty_sky.copy()
    house[2:, 2:] = 5  # 4 pixels of house
    score = RegionIoU(9)
    score.add(empty_sky, empty_sky)  # a plain sky, read right
    score.add(empty_sky, house)  # the house missed: all sky
    assert score.per_region() == {0: 28 / 32, 5: 0.0}
    assert score.mean() == pytest.approx((28 / 32 + 0) / 2)


def test_edge_f1_matches_edges_within_the_tolerance():
    truth = np.zeros((20, 20), bool)
    truth[10, 2:18] = True
    assert edge_f1(truth, truth) == 1.0
    assert edge_f1(np.roll(truth, 2, axis=0), truth, tolerance=2) == 1.0
    assert edge_f1(np.roll(truth, 2, axis=0), truth, tolerance=1) == 0.0
    half = truth.copy()
    half[10, 10:] = False  # precision 1; recall 10/16 (columns 2-11: the 2 px reach covers two more)
    assert edge_f1(half, truth) == pytest.approx(2 * (10 / 16) / (1 + 10 / 16))
    assert edge_f1(np.zeros_like(truth), truth) == 0.0
    assert edge_f1(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_segmenter_file_round_trip_and_refusals(tmp_path, classifier_path):  # noqa: F811
    torch.manual_seed(0)
    model = LayoutSegmenter(SegmenterConfig(width=8, input_size=16))
    path = tmp_path / "segmenter.safetensors"
    save_segmenter(model, path, {"miou": 0.5})
    loaded = load_segmenter(path)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loaded.predict(pixels).shape == (2, 32, 32)  # labels at the picture's size
    assert torch.equal(loaded.predict(pixels), model.predict(pixels))
    assert loaded.metadata == {"miou": 0.5}
    with pytest.raises(ModelError, match="is not a layout segmenter"):
        load_segmenter(classifier_path)


def test_the_shipped_segmenter_reads_fresh_scenes():
    from ldm.scenes import seeds
    from ldm.scenes.classifier_training import to_pixels
    from ldm.scenes.segmenter_training import render_layouts

    segmenter = load_segmenter(DEFAULT_SEGMENTER_PATH)
    images, labels = render_layouts(32, seeds.SEGMENTER_TEST)
    score = RegionIoU(len(segmenter.config.regions))
    for predicted, truth in zip(segmenter.predict(to_pixels(images)).numpy(), labels.numpy()):
        score.add(predicted, truth)
    assert score.mean() >= 0.9 and min(score.per_region().values()) >= 0.8, score.per_region()


@pytest.fixture
def backbone() -> str:
    """ControlNets are U-Net things: the tiny model here has a U-Net."""
    return "unet"


@pytest.fixture
def tiny_controlnet_dir(tiny_components, tmp_path):
    """Folder of an untrained ControlNet of the tiny model for a control type: zero
    convolutions, so it changes nothing."""
    from ldm.control.model import controlnet_from_unet, save_controlnet

    net = controlnet_from_unet(tiny_components.denoiser, vae_scale=2, latent_channels=4)
    return lambda control_type: save_controlnet(net, control_type, tmp_path / f"controlnet-{control_type}")


def _run(tiny_model_dir, classifier_path, prompts_file, out, *extra):  # noqa: F811
    argv = ["--model", str(tiny_model_dir), "--classifier", str(classifier_path), "--prompts", str(prompts_file)]
    argv += ["--size", "32", "--n-per-prompt", "2", "--steps", "2", "--out", str(out), "--quiet", *extra]
    return evaluate_tool.main(argv)


def _round_trip_f1(components, prompts, per_prompt, size):
    """Mean edge F1 of each held-out drawing's round trip through the VAE (posterior mean),
    computed here with the diffusers VAE directly, not through the pipeline."""
    from ldm.control.preprocessors import canny
    from ldm.images import from_pil, to_pil
    from ldm.scenes.control_evaluation import held_out_case

    scores = []
    for p, prompt in enumerate(prompts):
        for k in range(per_prompt):
            picture = held_out_case(prompt, p * per_prompt + k, size).picture
            with torch.no_grad():
                latents = components.vae.encode(from_pil([picture])).latent_dist.mode()
                rebuilt = to_pil(components.vae.decode(latents).sample)[0]
            edges = [np.asarray(canny(image).convert("L")) > 0 for image in (rebuilt, picture)]
            scores.append(edge_f1(*edges))
    return float(np.mean(scores))


def test_control_evaluation_end_to_end(tiny_model_dir, tiny_components, classifier_path, two_prompts, tiny_controlnet_dir, tmp_path, capsys):  # noqa: F811
    prompts_file, prompts = two_prompts
    out = tmp_path / "control"
    folder = tiny_controlnet_dir("canny")
    assert _run(tiny_model_dir, classifier_path, prompts_file, out, "--control", "canny", "--controlnet", str(folder)) == 0
    markdown = (out / "control.md").read_text()
    assert markdown.strip() in capsys.readouterr().out
    assert "edge F1 (2 px)" in markdown and "seconds per image" in markdown
    report = json.loads((out / "control.json").read_text())
    assert report["images"] == 4 and report["controlnet"] == str(folder)
    # Zero convolutions add nothing: with and without control draw the same pixels (same seeds).
    assert report["adherence"]["with_control"] == report["adherence"]["without_control"]
    assert report["accuracy"]["with_control"] == report["accuracy"]["without_control"]
    assert report["targets"]["over_no_control"]["met"] is False
    assert all(seconds > 0 for seconds in report["seconds_per_image"].values())
    # The ceiling: the held-out drawings through the tiny VAE and back, edges scored the same way.
    assert report["adherence"]["vae_round_trip"] == pytest.approx(_round_trip_f1(tiny_components, prompts, per_prompt=2, size=32))
    assert report["adherence"]["vae_round_trip"] < 1  # an untrained VAE loses edges: not the drawing itself
    reach = report["targets"]["adherence"]["reachable"]
    assert reach == (0.5 <= report["adherence"]["vae_round_trip"])
    assert "| VAE round trip |" in markdown and f"| {'yes' if reach else 'no'} |" in markdown
    grid = Image.open(out / "control.png")
    assert grid.width >= 6 * 32 and grid.height >= 2 * 32  # control, with, without: twice per row


def test_layout_evaluation_uses_the_given_segmenter(tiny_model_dir, classifier_path, two_prompts, tiny_controlnet_dir, tmp_path):  # noqa: F811
    prompts_file, _ = two_prompts
    segmenter = tmp_path / "segmenter.safetensors"
    save_segmenter(LayoutSegmenter(SegmenterConfig(width=8, input_size=16)), segmenter)
    out = tmp_path / "control"
    extra = ["--control", "layout", "--controlnet", str(tiny_controlnet_dir("layout")), "--segmenter", str(segmenter)]
    assert _run(tiny_model_dir, classifier_path, prompts_file, out, *extra) == 0
    report = json.loads((out / "control.json").read_text())
    assert report["metric"] == "region mIoU" and 0 <= report["adherence"]["with_control"] <= 1
    by_region = report["adherence_by_region"]["with_control"]
    assert "sky" in by_region and all(0 <= iou <= 1 for iou in by_region.values())
    assert "| IoU of sky |" in (out / "control.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--controlnet", "somewhere"], "--controlnet and --segmenter go with --control"),
        (["--control", "layout", "--sweep", "dpm++2m:2"], "--control and --sweep are separate"),
        (["--control", "canny", "--control-scale", "-1"], "--control-scale must be a number >= 0"),
        (["--control", "canny", "--lora", "x.safetensors"], "--lora is not applied in a --control evaluation"),
    ],
)
def test_bad_control_arguments_are_one_line_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as caught:
        evaluate_tool.main(extra)
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_the_given_controlnet_is_evaluated_even_when_the_model_has_one_of_its_type(
    tiny_model_dir, classifier_path, two_prompts, tiny_controlnet_dir, tmp_path  # noqa: F811
):
    import shutil

    prompts_file, _ = two_prompts
    given = tiny_controlnet_dir("canny")
    shutil.copytree(given, tiny_model_dir / "controlnet" / "edges")  # the model's own canny ControlNet
    out = tmp_path / "control"
    assert _run(tiny_model_dir, classifier_path, prompts_file, out, "--control", "canny", "--controlnet", str(given)) == 0


def test_a_bad_controlnet_folder_is_a_one_line_error(tiny_model_dir, classifier_path, two_prompts, tmp_path, capsys):  # noqa: F811
    prompts_file, _ = two_prompts
    assert _run(tiny_model_dir, classifier_path, prompts_file, tmp_path / "out", "--control", "canny", "--controlnet", str(tmp_path)) != 0
    error = capsys.readouterr().err.strip()
    assert "is not a ControlNet folder" in error and len(error.splitlines()) == 1


def test_a_model_without_a_controlnet_is_a_one_line_error(tiny_model_dir, classifier_path, two_prompts, tmp_path, capsys):  # noqa: F811
    prompts_file, _ = two_prompts
    assert _run(tiny_model_dir, classifier_path, prompts_file, tmp_path / "out", "--control", "canny") != 0
    error = capsys.readouterr().err.strip()
    assert "no ControlNet" in error and len(error.splitlines()) == 1
