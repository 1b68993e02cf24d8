"""--max-pixels counts a picture's pixels, width x height, on every path of ldm-generate and
ldm-inpaint: exactly the limit is made, one pixel more is one line, exit 2, no file. (A check
on latent cells lets the larger picture through, and fails here.)"""

import pytest
from PIL import Image

from ldm.cli import generate, inpaint

SIZE = 32  # the tiny model's own size, and the photo's


@pytest.fixture
def backbone():
    return "unet"  # the limit is the command's, not the denoiser's


@pytest.fixture
def files(tmp_path, photo):
    photo.save(tmp_path / "photo.png")
    photo.crop((0, 0, SIZE - 8, SIZE)).save(tmp_path / "narrow.png")
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, SIZE // 2, SIZE, SIZE))
    mask.save(tmp_path / "mask.png")
    return tmp_path


# command, its arguments for a SIZE x SIZE picture made along one path
PATHS = {
    "generate, width and height given": (generate, ["--width", SIZE, "--height", SIZE]),
    "generate at the model's size": (generate, []),
    "generate from an init image at its size": (generate, ["--init-image", "{files}/photo.png"]),
    "inpaint at the picture's size": (inpaint, ["--image", "{files}/photo.png", "--mask", "{files}/mask.png"]),
    "outpaint: the grown canvas": (inpaint, ["--image", "{files}/narrow.png", "--pad", "8,0,0,0"]),
}


def run(command, argv, capsys):
    try:
        status = command.main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("path", PATHS)
def test_exactly_the_limit_is_made_one_pixel_more_is_refused(tiny_model_dir, files, capsys, path):
    command, extra = PATHS[path]
    prog = command.PROG
    args = ["a lake", "--model", tiny_model_dir, "--steps", 1, "--seed", 0, "--quiet", *[str(a).replace("{files}", str(files)) for a in extra]]
    out = files / "out.png"
    status, err = run(command, [*args, "--out", out, "--max-pixels", SIZE * SIZE], capsys)
    assert status == 0, err
    assert Image.open(out).size == (SIZE, SIZE)
    out.unlink()
    status, err = run(command, [*args, "--out", out, "--max-pixels", SIZE * SIZE - 1], capsys)
    assert status == 2
    assert err.startswith(f"{prog}: error: ") and f"{SIZE}x{SIZE} is 0.0 megapixels, over the limit" in err and err.count("\n") == 1, err
    assert not out.exists()
