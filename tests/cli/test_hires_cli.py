"""ldm-generate's hires fix: a picture at the hires size whose PNG records the fix as
AUTOMATIC1111 writes it; bad hires input -> one line, exit 2, nothing written."""

import numpy as np
import pytest
from command_probe import run_main
from in_process import run_in_process
from PIL import Image

from ldm.cli.generate import main
from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters


@pytest.fixture
def backbone():
    return "unet"  # the command is backbone-agnostic; the pipeline's tests cover both


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the command draws with it): one folder per session."""
    return shared_tiny_model_dir


def test_hires_scale_writes_the_larger_picture_with_its_parameters(tiny_model_dir, tmp_path):
    out = tmp_path / "lake.png"
    args = ["a lake", "--model", str(tiny_model_dir), "--seed", "7", "--steps", "3", "--out", str(out), "--quiet"]
    hires = ["--hires-scale", "2", "--hires-strength", "0.5", "--hires-steps", "2", "--hires-upscaler", "latent-bicubic"]
    assert main(args + hires) == 0
    image = Image.open(out)
    assert image.size == (64, 64)
    parameters = parse_parameters(image.text["parameters"])
    assert parameters["Size"] == "32x32" and parameters["Denoising strength"] == "0.5"  # A1111: Size is the first pass's
    assert (parameters["Hires upscale"], parameters["Hires steps"], parameters["Hires upscaler"]) == ("2", "2", "Latent (bicubic)")
    expected = Pipeline.load(tiny_model_dir).generate(
        "a lake", seed=7, steps=3, hires_scale=2, hires_strength=0.5, hires_steps=2, hires_upscaler="Latent (bicubic)", progress=False
    )
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected.images[0]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hires-scale", "2", "--init-image", "{tmp}/photo.png"], "--hires-scale is for text to image: the hires fix draws its own"),
        (["--hires-steps", "4"], "hires steps needs a hires scale or resize (--hires-scale, --hires-resize)"),
        (["--hires-scale", "0.5"], "hires scale must be between 1 and 16, got 0.5"),
        (["--hires-scale", "2", "--hires-strength", "2"], "hires strength must be between 0 and 1, got 2"),
        (["--hires-scale", "2", "--hires-upscaler", "ESRGAN_4x"], "argument --hires-upscaler: unknown hires upscaler 'ESRGAN_4x'; choose one of latent,"),
        (["--hires-resize", "big"], "argument --hires-resize: must be WIDTHxHEIGHT in pixels"),
        (["--width", "1024", "--height", "1024", "--hires-scale", "2"], "hires fix size 2048x2048 is 4.2 megapixels, over the limit"),
    ],
)
def test_bad_hires_input_is_one_line_before_torch_and_no_file(tiny_model_dir, tmp_path, photo, args, message):
    photo.save(tmp_path / "photo.png")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    status, imported, stderr = run_main("ldm.cli.generate", "a lake", "--model", tiny_model_dir, "--out", tmp_path / "out.png", *args)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"ldm-generate: error: {message}"), stderr
    assert not imported and not (tmp_path / "out.png").exists()


def test_a_first_size_at_the_models_default_is_checked_once_the_model_is_read(tiny_model_dir, tmp_path):
    # main() in this process: the check comes after the torch import (the real command's exits: tests/cli).
    process = run_in_process("ldm-generate", main, "a lake", "--model", tiny_model_dir, "--out", tmp_path / "out.png",
                             "--hires-scale", "16", "--max-pixels", "100000")  # fmt: skip
    status, stderr = process.returncode, process.stderr
    assert status == 2 and stderr.strip() == "ldm-generate: error: hires fix size 512x512 is 0.3 megapixels, over the limit of 0.1 (raise it with --max-pixels if your hardware has the memory)"
    assert not (tmp_path / "out.png").exists()
