"""ldm-inpaint and ldm-generate --init-image: bad input is one line and exit 2, no file."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.cli import generate, inpaint
from ldm.png_info import parse_parameters


@pytest.fixture
def files(tmp_path, photo, square_mask):
    photo.save(tmp_path / "photo.png")
    square_mask.save(tmp_path / "mask.png")
    (tmp_path / "notes.png").write_text("not a picture")
    return tmp_path


def no_model_needed(files):
    """The bad-input cases end before a model is read: a folder at the model's path is enough
    (that path is checked first)."""
    (files / "tiny-model").mkdir()


def run_cli(main, argv, capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def inpaint_args(files, *extra):
    return ["a cat", "--model", str(files / "tiny-model"), "--steps", "2", "--seed", "1", "--quiet",
            "--out", str(files / "out.png"), *extra]  # fmt: skip


BAD_INPAINT = {
    "missing image": (["--mask", "mask.png"], "--image is required"),
    "missing mask": (["--image", "photo.png"], "--mask is required"),
    "image file not found": (["--image", "nope.png", "--mask", "mask.png"], "image file not found"),
    "mask not an image": (["--image", "photo.png", "--mask", "notes.png"], "is not an image"),
    "strength above 1": (["--image", "photo.png", "--mask", "mask.png", "--strength", "1.5"], "strength must be between 0 and 1"),
    "negative pad": (["--image", "photo.png", "--pad", "0,0,-8,0"], "pad must not be negative"),
    "negative pad, = form": (["--image", "photo.png", "--pad=-8,0,0,0"], "pad must not be negative"),
    "pad not numbers": (["--image", "photo.png", "--pad", "wide"], "argument --pad: must be LEFT,TOP,RIGHT,BOTTOM"),
    "huge pad": (["--image", "photo.png", "--pad", "100000"], "outpainted canvas 200032x200032 is"),
    "huge mask blur": (["--image", "photo.png", "--mask", "mask.png", "--mask-blur", "1e12"], "mask blur must be between 0 and 256"),
    "steps not a number": (["--image", "photo.png", "--mask", "mask.png", "--steps", "many"], "argument --steps: invalid int value"),
    "negative crop padding": (["--image", "photo.png", "--mask", "mask.png", "--crop-to-mask", "-4"], "must not be negative"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPAINT)
def test_bad_inpaint_input_is_one_line_and_exit_2(files, capsys, monkeypatch, case):
    monkeypatch.chdir(files)
    no_model_needed(files)
    args, message = BAD_INPAINT[case]
    status, err = run_cli(inpaint.main, inpaint_args(files, *args), capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("ldm-inpaint: error: ") and message in err, err
    assert "Traceback" not in err
    assert not (files / "out.png").exists()


def test_inpaint_writes_the_picture_with_its_settings(files, tiny_model_dir, capsys, photo, square_mask):
    args = inpaint_args(files, "--image", str(files / "photo.png"), "--mask", str(files / "mask.png"), "--mask-blur", "0")
    status, err = run_cli(inpaint.main, args, capsys)
    assert status == 0, err
    out = Image.open(files / "out.png")
    assert out.size == photo.size
    inside = np.asarray(square_mask) == 255
    assert np.array_equal(np.asarray(out)[~inside], np.asarray(photo)[~inside])
    fields = parse_parameters(out.text["parameters"])
    assert fields["Mask blur"] == "0" and fields["Denoising strength"] == "1" and fields["Seed"] == "1"


def test_inpaint_with_an_all_black_mask_says_so_and_writes_the_input(files, tiny_model_dir, capsys, photo):
    Image.new("L", (8, 8), 0).save(files / "black.png")
    args = inpaint_args(files, "--image", str(files / "photo.png"), "--mask", str(files / "black.png"))
    status, err = run_cli(inpaint.main, args, capsys)
    assert status == 0, err
    assert "mask 8x8 resized to the image's 32x32" in err and "all black" in err
    assert np.array_equal(np.asarray(Image.open(files / "out.png")), np.asarray(photo))


def test_outpaint_and_crop_to_mask_sizes(files, tiny_model_dir, capsys):
    args = inpaint_args(files, "--image", str(files / "photo.png"), "--pad", "8,0,8,16")
    assert run_cli(inpaint.main, args, capsys)[0] == 0
    assert Image.open(files / "out.png").size == (48, 48)
    args = inpaint_args(files, "--image", str(files / "photo.png"), "--mask", str(files / "mask.png"), "--crop-to-mask", "2")
    assert run_cli(inpaint.main, args, capsys)[0] == 0
    assert Image.open(files / "out.png").size == (32, 32)


BAD_IMG2IMG = {
    "init image not found": (["--init-image", "nope.png"], "init image file not found"),
    "init image not an image": (["--init-image", "notes.png"], "is not an image"),
    "strength above 1": (["--init-image", "photo.png", "--strength", "1.5"], "strength must be between 0 and 1"),
    "strength without image": (["--strength", "0.5"], "--strength needs --init-image"),
    "init image over the pixel limit": (["--init-image", "big.png"], "input picture 2048x1536 is 3.1 megapixels, over the limit"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_IMG2IMG)
def test_bad_img2img_input_is_one_line_and_exit_2(files, capsys, monkeypatch, case):
    monkeypatch.chdir(files)
    no_model_needed(files)
    Image.new("RGB", (2048, 1536)).save(files / "big.png")
    args, message = BAD_IMG2IMG[case]
    status, err = run_cli(generate.main, inpaint_args(files, *args), capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("ldm-generate: error: ") and message in err, err
    assert not (files / "out.png").exists()


def test_generate_from_an_init_image(files, tiny_model_dir, capsys, photo):
    photo.resize((36, 20)).save(files / "odd.png")
    args = inpaint_args(files, "--init-image", str(files / "odd.png"), "--strength", "0.5")
    status, err = run_cli(generate.main, args, capsys)
    assert status == 0, err
    assert "init image 36x20 resized to 40x24" in err
    out = Image.open(files / "out.png")
    assert out.size == (40, 24)
    assert parse_parameters(out.text["parameters"])["Denoising strength"] == "0.5"


@pytest.mark.parametrize("module", ["ldm.cli.inpaint", "ldm.cli.generate"])
def test_help_does_not_import_torch(module):
    code = f"import sys, {module} as m; m.build_parser().format_help(); print('torch' in sys.modules)"
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "False"
