"""tools/evaluate.py end to end on the tiny model, and its argument checks."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ldm.scenes.attribute_classifier import HEADS, AttributeClassifier, ClassifierConfig, save_classifier
from ldm.scenes.prompts import build_prompts
from tool_scripts import load_tool

TOOL = Path(__file__).resolve().parents[2] / "tools" / "evaluate.py"


evaluate_tool = load_tool("evaluate.py", "evaluate_tool")


@pytest.fixture
def classifier_path(tmp_path):
    """An untrained classifier: the tiny model draws noise anyway, and this keeps the test
    independent of whether weights are shipped."""
    torch.manual_seed(0)
    path = tmp_path / "classifier.safetensors"
    save_classifier(AttributeClassifier(ClassifierConfig(input_size=32)), path, {"accuracy": {"time_of_day": 1.0}})
    return path


@pytest.fixture
def two_prompts(tmp_path):
    """One seen prompt with features and one held-out prompt, as a prompts file."""
    seen = [p for p in build_prompts("seen", per_pair=2) if len(p.asserts) > 2][0]
    heldout = build_prompts("heldout", per_pair=1)[0]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in (seen, heldout)))
    return path, [seen, heldout]


def _round_trip_pixel_std(components, prompts, per_prompt, size):
    from ldm.images import from_pil
    from ldm.scenes.diversity import mean_over_prompts, pixel_std
    from ldm.scenes.model_evaluation import real_scenes

    stds = []
    for p, prompt in enumerate(prompts):
        drawings = from_pil(real_scenes(prompt, p * per_prompt, per_prompt, size))
        with torch.no_grad():
            rebuilt = components.vae.decode(components.vae.encode(drawings).latent_dist.mode()).sample
        quantised = ((rebuilt.clamp(-1, 1) + 1) * 127.5).round() / 255  # as saved to 8-bit pictures
        stds.append(pixel_std(quantised))
    return mean_over_prompts(stds)


def test_runs_end_to_end_on_the_tiny_model(tiny_model_dir, tiny_components, classifier_path, two_prompts, tmp_path, capsys):
    prompts_file, prompts = two_prompts
    out = tmp_path / "report"
    argv = ["--model", str(tiny_model_dir), "--classifier", str(classifier_path), "--prompts", str(prompts_file)]
    argv += ["--size", "32", "--n-per-prompt", "2", "--steps", "2", "--vae-images", "2", "--out", str(out), "--quiet"]
    assert evaluate_tool.main(argv) == 0

    printed = capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert markdown.strip() in printed
    assert "| time_of_day |" in markdown and "held-out: generated" in markdown and "PSNR" in markdown
    assert "The judge, an attribute classifier" in markdown

    report = json.loads((out / "report.json").read_text())
    assert {"settings", "prompts", "generated", "real", "vae", "timing", "targets", "per_prompt", "model", "classifier"} <= set(report)
    assert report["prompts"] == {"seen": 1, "heldout": 1}
    accuracy = report["generated"]["accuracy"]
    assert accuracy["seen"]["images"] == accuracy["heldout"]["images"] == 2
    assert set(accuracy["seen"]["per_attribute"]) == set(prompts[0].asserts)  # only what was stated
    assert set(accuracy["heldout"]["per_attribute"]) == {"time_of_day", "setting"}
    assert 0 <= accuracy["all"]["overall"] <= 1
    # Real drawings of the prompts are judged the same way, as the reference.
    assert report["real"]["accuracy"]["all"]["images"] == 4
    # And through the model's VAE (the ceiling it allows): the same drawings, round-tripped here
    # with the diffusers VAE directly, give the reported figures.
    assert report["real_through_vae"]["accuracy"]["all"]["images"] == 4
    round_trip_std = _round_trip_pixel_std(tiny_components, prompts, per_prompt=2, size=32)
    assert report["real_through_vae"]["diversity"]["pixel_std"] == pytest.approx(round_trip_std, abs=1e-4)
    assert report["real_through_vae"]["diversity"]["pixel_std"] != pytest.approx(report["real"]["diversity"]["pixel_std"], abs=1e-3)
    assert "seen: real via VAE" in markdown
    assert set(report["generated"]["diversity"]) == {"feature_distance", "pixel_std"}
    assert report["generated"]["diversity"]["pixel_std"] > 0
    assert report["vae"]["images"] == 2 and report["vae"]["size"] == 32 and report["vae"]["psnr"] > 0
    assert report["timing"]["seconds_per_image"] > 0
    assert set(report["targets"]) == {"seen_accuracy", "heldout_accuracy", "vae_psnr_db", "seconds_per_image"}
    assert report["targets"]["seen_accuracy"]["target"] == 0.95 and report["targets"]["vae_psnr_db"]["target"] == 32.0
    seconds = report["targets"]["seconds_per_image"]
    assert seconds["measured"] == report["timing"]["seconds_per_image"] and seconds["met"] == (seconds["measured"] <= 1.5)
    assert "| seconds_per_image | ≤ 1.50 s |" in markdown
    assert report["at_target_settings"] is False
    assert [p["prompt"] for p in report["per_prompt"]] == [p.text for p in prompts]
    assert all(len(p["predictions"]) == 2 and set(p["predictions"][0]) == set(HEADS) for p in report["per_prompt"])

    grid = Image.open(out / "grid.png")
    assert grid.height >= 2 * 32 and grid.width >= 2 * 32  # a row per prompt, two images each
    assert (out / "prompts.jsonl").read_text() == prompts_file.read_text()


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--prompts", "everything"], "--prompts must be one of seen, heldout, both, windmill or an existing file"),
        (["--size", "30"], "--size must be a multiple of 8"),
        (["--n-per-prompt", "0"], "--n-per-prompt must be at least 1"),
        (["--vae-images", "-1"], "--vae-images must not be negative"),
    ],
)
def test_bad_arguments_fail_with_one_line(bad, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_tool.main(bad)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_model_or_classifier_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    assert evaluate_tool.main(["--model", str(tmp_path / "nope"), "--prompts", "heldout"]) == 2
    assert "model folder not found" in capsys.readouterr().err
    missing = str(tmp_path / "none.safetensors")
    assert evaluate_tool.main(["--model", str(tiny_model_dir), "--classifier", missing]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert evaluate_tool.main(["--model", str(tiny_model_dir), "--sampler", "magic", "--classifier", missing]) == 2
    assert "unknown sampler 'magic'" in capsys.readouterr().err


def test_sweep_tables_and_plots_each_point_as_its_own_evaluation(tiny_model_dir, classifier_path, two_prompts, tmp_path, capsys, monkeypatch):
    import ldm.scenes.model_evaluation as model_evaluation

    ran, evaluate = [], model_evaluation.evaluate_model
    monkeypatch.setattr(model_evaluation, "evaluate_model", lambda *a, **k: ran.append(a[3]) or evaluate(*a, **k))
    prompts_file, _ = two_prompts
    common = ["--classifier", str(classifier_path), "--prompts", str(prompts_file), "--size", "32", "--n-per-prompt", "2", "--quiet"]
    sweep = f"{tiny_model_dir}@ddim:2,{tiny_model_dir}@euler:3:2.5"
    assert evaluate_tool.main([*common, "--sweep", sweep, "--out", str(tmp_path / "sweep")]) == 0
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"]
    assert [(r["sampler"], r["steps"], r["cfg"]) for r in rows] == [("ddim", 2, 7.5), ("euler", 3, 2.5)]
    assert [(s.sampler, s.steps, s.cfg, s.vae_images) for s in ran] == [("ddim", 2, 7.5, 0), ("euler", 3, 2.5, 0)]
    markdown = (tmp_path / "sweep" / "sweep.md").read_text()
    assert markdown in capsys.readouterr().out and markdown.count("| euler | 3 | 2.5 |") == 1
    assert Image.open(tmp_path / "sweep" / "sweep.png").size == (720, 480)

    # The euler point equals a plain evaluation with those settings (same prompts and seeds).
    single = [*common, "--model", str(tiny_model_dir), "--sampler", "euler", "--steps", "3", "--cfg", "2.5", "--vae-images", "0"]
    assert evaluate_tool.main([*single, "--out", str(tmp_path / "single")]) == 0
    accuracy = json.loads((tmp_path / "single" / "report.json").read_text())["generated"]["accuracy"]
    assert (rows[1]["seen"], rows[1]["heldout"]) == (accuracy["seen"]["overall"], accuracy["heldout"]["overall"])


@pytest.mark.parametrize("sweep, message", [("ddim", "is not [MODEL@]SAMPLER:STEPS[:CFG]"), ("ddim:x", "STEPS must be a whole number"),
                                            ("ddim:0", "STEPS must be at least 1"), ("magic:4", "unknown sampler 'magic'")])
def test_bad_sweep_points_are_one_line_errors(sweep, message, tiny_model_dir, capsys):
    assert evaluate_tool.main(["--model", str(tiny_model_dir), "--sweep", sweep]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_runs_as_a_script():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--sweep" in result.stdout


def test_lora_is_applied_to_every_image_and_concept_prompts_need_a_judge_with_that_head(
    tiny_unet_components, classifier_path, tmp_path, capsys, monkeypatch
):
    from lora_files import random_lora, write_lora

    import ldm.scenes.model_evaluation as model_evaluation
    from ldm.formats.model_folder import save_model

    tiny_model_dir = save_model(tiny_unet_components, tmp_path / "model")  # LoRAs are U-Net only
    lora = tmp_path / "style-lora.safetensors"
    write_lora(random_lora(tiny_unet_components), lora, "kohya")
    seen = []
    generate = model_evaluation.judge
    monkeypatch.setattr(model_evaluation, "judge", lambda classifier, prompt, images: seen.append(images) or generate(classifier, prompt, images))
    common = ["--model", str(tiny_model_dir), "--classifier", str(classifier_path), "--prompts", "heldout", "--prompts-per-pair", "1"]
    common += ["--size", "32", "--n-per-prompt", "1", "--steps", "2", "--vae-images", "0", "--quiet"]
    assert evaluate_tool.main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert evaluate_tool.main([*common, "--lora", f"{lora}:0.8", "--out", str(tmp_path / "lora")]) == 0
    report = json.loads((tmp_path / "lora" / "report.json").read_text())
    assert report["settings"]["loras"] == [[str(lora), 0.8]]
    generated = [image for images in seen[::2] for image in images]  # every other call judges real scenes
    half = len(generated) // 2
    assert any(a.tobytes() != b.tobytes() for a, b in zip(generated[:half], generated[half:]))  # the LoRA drew

    assert evaluate_tool.main([*common, "--lora", str(tmp_path / "none.safetensors")]) == 2
    assert "LoRA file not found" in capsys.readouterr().err
    assert evaluate_tool.main([*common[:4], "--prompts", "windmill"]) == 2
    err = capsys.readouterr().err
    assert "the judge has no 'windmill' head" in err and len(err.strip().splitlines()) == 1
