"""ldm-generate as a user runs it: PNGs with parameters; bad input -> one line, exit 2, no file."""

import subprocess
import sys

import pytest
from in_process import run_in_process
from PIL import Image

from ldm.cli.generate import main
from ldm.png_info import parse_parameters


def run_cli(*args):
    """The real command in a fresh interpreter: exit status, stdout, stderr."""
    process = subprocess.run([sys.executable, "-m", "ldm.cli.generate", *map(str, args)], capture_output=True, text=True)
    return process.returncode, process.stdout, process.stderr


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the commands draw with it): one folder per session."""
    return shared_tiny_model_dir


def test_end_to_end_png_carries_its_parameters(tiny_model_dir, tmp_path):
    out = tmp_path / "lake.png"
    status, _, stderr = run_cli(
        "a lake at dawn", "--model", tiny_model_dir, "--cfg", 6.5, "--seed", 7, "--steps", 3, "--negative", "fog", "--out", out
    )
    assert status == 0, stderr
    image = Image.open(out)
    assert image.size == (32, 32)
    parameters = parse_parameters(image.text["parameters"])
    assert parameters["prompt"] == "a lake at dawn"
    assert parameters["negative_prompt"] == "fog"
    assert (parameters["Seed"], parameters["CFG scale"], parameters["Steps"]) == ("7", "6.5", "3")
    assert parameters["Sampler"] == "dpm++2m" and parameters["Size"] == "32x32" and parameters["Model"] == "tiny"
    assert "Traceback" not in stderr


def test_several_images_go_to_a_folder_numbered_with_their_seeds(tiny_model_dir, tmp_path):
    assert main(["a meadow", "--model", str(tiny_model_dir), "--n", "2", "--seed", "3", "--steps", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["a meadow", "--model", str(tiny_model_dir), "--seed", "9", "--steps", "2", "--out", str(tmp_path), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["00000-3.png", "00001-4.png", "00002-9.png"]
    assert parse_parameters(Image.open(tmp_path / "00001-4.png").text["parameters"])["Seed"] == "4"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/nowhere"], "model folder not found"),
        (["--model", "{tmp}"], "is not a model folder"),
        (["--width", "100"], "width must be a positive multiple of 8, got 100"),
        (["--steps", "0"], "steps must be between 1 and 1000, got 0"),
        (["--steps", "1000000"], "steps must be between 1 and 1000, got 1000000"),
        (["--width", "100000", "--height", "100000"], "image 100000x100000 is 10000.0 megapixels, over the limit"),
        (["--n", "100000"], "n must be between 1 and 1000, got 100000"),
        (["--seed", str(10**23)], "seed must be between 0 and 2**63-1"),
        (["--cfg", "inf"], "cfg must be a finite number >= 0, got inf"),
        (["--cfg", "nan"], "cfg must be a finite number >= 0, got nan"),
        (["--batch-size", "-1"], "batch size must be at least 1, got -1"),
        (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
        (["--sampler", "plms"], "unknown sampler 'plms'; known samplers: ddpm, ddim, euler, euler-a, heun, dpm++2m"),
        (["--cfg", "-2"], "cfg must be a finite number >= 0, got -2"),
        (["--out", "{tmp}/file.txt/x.png"], "cannot create output folder"),
    ],
)
def test_bad_input_is_one_line_and_no_file(tiny_model_dir, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    (tmp_path / "file.txt").write_text("in the way")
    out = [] if "--out" in args else ["--out", str(tmp_path / "out.png")]
    model = [] if "--model" in args else ["--model", str(tiny_model_dir)]
    process = run_in_process("ldm-generate", main, "a lake", *model, *out, *args)  # the real command: above and tests/cli/test_lora_cli.py
    status, stderr = process.returncode, process.stderr
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldm-generate: error: ") and message in lines[0], stderr
    assert not list(tmp_path.rglob("*.png"))


def test_help_does_not_import_torch():
    code = "import sys; from ldm.cli.generate import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
