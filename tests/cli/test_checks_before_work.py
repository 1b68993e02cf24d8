"""Bad paths are told before the work: ldm-generate and ldm-inpaint refuse a missing model,
an output they cannot write and a missing ControlNet folder before torch is imported (let
alone a model loaded or a step sampled): one line, exit 2, nothing written."""

from pathlib import Path

import pytest
from command_probe import run_main

# /proc takes no new files, whoever asks (root included, whom os.access always lets write).
UNWRITABLE = Path("/proc/ldm-test-out.png")


@pytest.fixture
def backbone():
    return "unet"  # the checks come before any model is read: one backbone is enough


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the commands refuse before reading it): one folder per session."""
    return shared_tiny_model_dir


COMMANDS = {
    "ldm.cli.generate": ("ldm-generate", []),
    "ldm.cli.inpaint": ("ldm-inpaint", ["--image", "{tmp}/photo.png", "--mask", "{tmp}/photo.png"]),
}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/nowhere"], "model folder not found: {tmp}/nowhere"),
        (["--out", str(UNWRITABLE)], "cannot write in output folder /proc"),
        (["--out", "/proc"], "cannot write in output folder /proc"),
        (["--control", "{tmp}/photo.png", "--controlnet", "{tmp}/no-controlnet"], "ControlNet folder not found: {tmp}/no-controlnet"),
    ],
)
def test_a_bad_path_is_told_before_torch_is_imported(tiny_model_dir, tmp_path, photo, module, args, message):
    prog, extra = COMMANDS[module]
    photo.save(tmp_path / "photo.png")
    model = [] if "--model" in args else ["--model", str(tiny_model_dir)]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out.png")]
    args = [a.replace("{tmp}", str(tmp_path)) for a in [*extra, *model, *out, *args]]
    status, imported, stderr = run_main(module, "a lake", "--steps", 1, *args)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: {message.replace('{tmp}', str(tmp_path))}"), stderr
    assert status == 2 and not imported
    assert not (tmp_path / "out.png").exists() and not UNWRITABLE.exists()
