"""ldm-upscale and ldm-generate --upscale as a user runs them: 4x PNGs whose parameters say
what was done; bad input is one line, exit 2, nothing written."""

import numpy as np
import pytest
from command_probe import run_main
from PIL import Image

from ldm.cli import generate, upscale
from ldm.formats.model_folder import save_model
from ldm.png_info import parse_parameters
from tiny import build_tiny_upscaler


@pytest.fixture
def backbone():
    return "unet"  # the generating model of --upscale, and the one that is not an upscaler: one is enough


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory):
    return save_model(build_tiny_upscaler(), tmp_path_factory.mktemp("models") / "tiny-x4")


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "out").mkdir()
    return tmp_path


def run_cli(main, argv, capsys) -> tuple[int, str]:
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def test_an_upscale_is_4x_and_records_what_was_done(files, upscaler_dir, capsys):
    out = files / "out" / "small-x4.png"
    status, err = run_cli(upscale.main, [files / "small.png", "--model", upscaler_dir, "--prompt", "a lake", "--steps", 2,
                                         "--seed", 5, "--noise-level", 30, "--quiet", "--out", out], capsys)  # fmt: skip
    assert status == 0, err
    image = Image.open(out)
    assert image.size == (64, 48)
    fields = parse_parameters(image.text["parameters"])
    assert (fields["prompt"], fields["Seed"], fields["Steps"], fields["Noise level"]) == ("a lake", "5", "2", "30")
    assert (fields["Size"], fields["Model"]) == ("64x48", "tiny")


def test_several_pictures_go_to_a_folder_with_their_seeds(files, upscaler_dir, capsys):
    argv = [files / "small.png", files / "tiny.png", "--model", upscaler_dir, "--steps", 1, "--seed", 3, "--n", 2, "--quiet", "--out", files / "out"]
    status, err = run_cli(upscale.main, argv, capsys)
    assert status == 0, err
    names = sorted(p.name for p in (files / "out").glob("*.png"))
    assert names == ["00000-3.png", "00001-4.png", "00002-3.png", "00003-4.png"]
    assert Image.open(files / "out" / "00003-4.png").size == (32, 32)


def test_generate_then_upscale(files, upscaler_dir, tiny_model_dir, capsys):
    out = files / "out" / "lake.png"
    argv = ["a lake", "--model", tiny_model_dir, "--width", 16, "--height", 16, "--steps", 2, "--seed", 4, "--upscale", upscaler_dir,
            "--quiet", "--out", out]  # fmt: skip
    status, err = run_cli(generate.main, argv, capsys)
    assert status == 0, err
    image = Image.open(out)
    fields = parse_parameters(image.text["parameters"])
    assert image.size == (64, 64) and (fields["Size"], fields["Upscaled size"], fields["Upscaler"]) == ("16x16", "64x64", "tiny")


BAD = {
    "not an image": (["notes.png"], "image notes.png is not an image"),
    "no such file": (["nope.png"], "image file not found: nope.png"),
    "a 1x1 picture": (["dot.png"], "input picture 1x1 is too small to upscale: at least 8 pixels a side"),
    "output past the limits": (["small.png", "--max-pixels", 1000], "upscaled image (x4) 64x48 is 0.0 megapixels, over the limit"),
    "noise level past the model's": (["small.png", "--noise-level", 351], "noise level must be between 0 and this model's max_noise_level 350"),
    "negative noise level": (["small.png", "--noise-level", -3], "noise level must be 0 or more, got -3"),
    "tiny tiles": (["small.png", "--tile", 2], "tile must be at least 16 pixels, got 2"),
    "not an upscaler": (["small.png", "--model", "{plain}"], "model tiny is not an upscaler"),
    "width is not an upscale option": (["small.png", "--width", 64], "unrecognized arguments: --width 64"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, upscaler_dir, tiny_model_dir, capsys, monkeypatch, case):
    monkeypatch.chdir(files)
    args, message = BAD[case]
    args = [str(arg).replace("{plain}", str(tiny_model_dir)) for arg in args]
    model = [] if "--model" in args else ["--model", str(upscaler_dir)]
    status, err = run_cli(upscale.main, [*args, *model, "--steps", 1, "--quiet", "--out", files / "out"], capsys)
    assert status == 2
    assert err.strip() == f"ldm-upscale: error: {message}" or (message in err and err.count("\n") == 1), err
    assert not list((files / "out").iterdir())


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("ldm.cli.upscale", ["{tmp}/small.png"], "no built-in upscaler is installed: name an upscaler model folder; see --list-models"),
        ("ldm.cli.upscale", ["{tmp}/small.png", "--model", "{tmp}/nowhere"], "model folder not found: {tmp}/nowhere"),
        ("ldm.cli.upscale", ["{tmp}/small.png", "--model", "{tmp}", "--noise-level", "-1"], "noise level must be 0 or more"),
        ("ldm.cli.generate", ["a lake", "--upscale"], "no built-in upscaler is installed"),
        ("ldm.cli.generate", ["a lake", "--upscale", "{tmp}/nowhere"], "model folder not found: {tmp}/nowhere"),
    ],
)
def test_bad_paths_are_told_before_torch_is_imported(files, module, args, message):
    args = [arg.replace("{tmp}", str(files)) for arg in args]
    status, imported, err = run_main(module, *args, "--out", files / "out")
    assert (status, imported) == (2, False), err
    assert message.replace("{tmp}", str(files)) in err and err.count("\n") == 1
    assert not list((files / "out").iterdir())


@pytest.mark.parametrize("option", [["--compile"], ["--embeddings-dir", "."]])
def test_options_an_upscaler_has_no_use_for_are_refused(option, capsys):
    """An upscaler is never compiled and reads no embeddings: not accepted and ignored."""
    status, err = run_cli(upscale.main, ["small.png", *option], capsys)
    assert status == 2 and err.strip() == f"ldm-upscale: error: unrecognized arguments: {' '.join(option)}"
