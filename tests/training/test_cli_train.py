"""ldm-train on bad input: one line on stderr, exit status 2, no traceback, before training."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from command_probe import run_main
from in_process import run_in_process

from configs import tiny_train_dict

REPO = Path(__file__).parents[2]


def ldm_train(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ldm.cli.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def train_main(*args) -> subprocess.CompletedProcess:
    """ldm-train's main(args) in this process, told as ldm_train tells the real command."""
    from ldm.cli.train import main

    return run_in_process("ldm-train", main, *args)


def write_config(tmp_path, stage="text2img", **changes):
    data = tiny_train_dict(stage, tmp_path / "run")
    data["data"]["path"] = str(tmp_path)  # there (the cases fail before its images are read)
    data.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldm-train: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from ldm.cli.train import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False"
    assert "--resume" in ldm_train("--help").stdout


def test_missing_config(tmp_path):
    assert_one_line_error(ldm_train("--config", tmp_path / "nope.yaml"), "not found")


def test_broken_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("stage: [text2img\n")
    assert_one_line_error(ldm_train("--config", path), "not valid YAML")


def test_unknown_key_in_file_and_override(tmp_path):
    path = write_config(tmp_path, validaton={"every": 3})
    # The real command, told after torch and diffusers are imported: still one line, exit 2.
    assert_one_line_error(ldm_train("--config", path), "validaton", "validation")
    path = write_config(tmp_path)
    assert_one_line_error(train_main("--config", path, "train.learning_rate=3"), "train.learning_rate")


def test_unknown_denoiser_names_the_known_ones(tmp_path):
    path = write_config(tmp_path)
    assert_one_line_error(train_main("--config", path, "model.denoiser=mamba"), "model.denoiser is 'mamba'", "unet, dit, mmdit")


def test_output_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = write_config(tmp_path)
    assert_one_line_error(train_main("--config", path, f"train.output_dir={blocker}/run"), "cannot be written")


def test_resume_path_that_is_not_a_checkpoint(tmp_path):
    path = write_config(tmp_path)
    (tmp_path / "empty").mkdir()
    assert_one_line_error(train_main("--config", path, "--resume", tmp_path / "empty"), "not a checkpoint")
    assert_one_line_error(train_main("--config", path, "--resume", "latest"), "no checkpoint")


@pytest.mark.parametrize("stage", ["text2img", "upscaler"])
def test_a_random_frozen_text_encoder_is_refused_unless_asked_for(tmp_path, stage):
    """No text_encoder_from, no model.text_encoder.pretrained, no init_from: the run would learn
    from captions a random tower turns to noise; the error names the keys that fix it."""
    path = write_config(tmp_path, stage=stage)
    result = train_main("--config", path, "train.allow_random_text_encoder=false")
    assert_one_line_error(result, "random and frozen", f"{stage}.text_encoder_from", "model.text_encoder.pretrained", f"{stage}.init_from")
    assert not (tmp_path / "run").exists()  # refused before the output folder is touched
    dry = train_main("--config", path, "train.allow_random_text_encoder=false", "--dry-run")
    assert dry.returncode == 0 and "ldm-train would refuse this config: the text encoder would be random" in dry.stdout


def test_the_random_text_encoder_rule(tmp_path):
    from ldm.training.config import random_text_encoder

    from configs import tiny_train_config

    config = tiny_train_config("text2img", tmp_path, allow_random_text_encoder=False)
    assert "text2img.text_encoder_from" in random_text_encoder(config)
    for key, value in (("text_encoder_from", "runs/clip/text_encoder"), ("init_from", "scenes")):
        setattr(config.text2img, key, value)
        assert random_text_encoder(config) is None
        setattr(config.text2img, key, None)
    config.model.text_encoder.pretrained = "open_clip.safetensors"
    assert random_text_encoder(config) is None
    config.model.text_encoder.pretrained = None
    config.train.allow_random_text_encoder = True
    assert random_text_encoder(config) is None
    for stage in ("autoencoder", "clip"):  # no frozen text encoder to speak of
        assert random_text_encoder(tiny_train_config(stage, tmp_path, allow_random_text_encoder=False)) is None


def test_missing_vae_folder(tmp_path):
    path = write_config(tmp_path)
    assert_one_line_error(train_main("--config", path, f"text2img.vae_from={tmp_path}/novae"), "text2img.vae_from")


def test_data_path_without_images(tmp_path):
    (tmp_path / "images").mkdir()
    path = write_config(tmp_path)
    assert_one_line_error(train_main("--config", path, f"data.path={tmp_path}/images"))


@pytest.mark.parametrize(
    "stage, override, message",
    [
        ("text2img", "data.path={tmp}/nowhere", "data.path does not exist: {tmp}/nowhere"),
        ("text2img", "data.source=hf data.path={tmp}/*.parquet", "data.path does not exist: {tmp}/*.parquet"),
        ("text2img", "text2img.init_from={tmp}/nowhere", "text2img.init_from: model folder not found: {tmp}/nowhere"),
        ("text2img", "text2img.vae_from={tmp}/nowhere", "text2img.vae_from: {tmp}/nowhere is not a folder"),
        ("inpaint", "inpaint.init_from={tmp}/nowhere", "inpaint.init_from: model folder not found: {tmp}/nowhere"),
        ("controlnet", "controlnet.init_from={tmp}/nowhere", "controlnet.init_from: model folder not found: {tmp}/nowhere"),
        ("lcm", "lcm.init_from={tmp}/nowhere", "lcm.init_from: model folder not found: {tmp}/nowhere"),
        ("lora", "lora.init_from={tmp}/nowhere", "lora.init_from: model folder not found: {tmp}/nowhere"),
    ],
)
def test_a_missing_path_is_told_before_torch_is_imported(tmp_path, stage, override, message):
    path = write_config(tmp_path, stage)
    overrides = override.replace("{tmp}", str(tmp_path)).split()
    status, imported, stderr = run_main("ldm.cli.train", "--config", path, *overrides)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ldm-train: error: {message.replace('{tmp}', str(tmp_path))}"), stderr
    assert status == 2 and not imported
    assert not (tmp_path / "run").exists()


def test_a_built_in_model_or_a_single_file_is_a_model_to_start_from(tmp_path):
    """Names and files the stages load (not only folders) pass the early check."""
    from ldm.cli.train_paths import check_config_paths

    (tmp_path / "model.safetensors").write_bytes(b"")
    for stage in ("text2img", "inpaint", "controlnet", "lcm", "lora"):
        for model in ("scenes", str(tmp_path / "model.safetensors")):
            check_config_paths({"stage": stage, stage: {"init_from": model}, "data": {"path": str(tmp_path)}})
