"""Bad paths are told before the work: ldm-generate and ldm-inpaint refuse a missing model,
an output they cannot write and a missing ControlNet folder before torch is imported (let
alone a model loaded or a step sampled): one line, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

# Runs a command's main() and tells how it ended and whether torch was imported by then.
PROBE = """
import sys
from {module} import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(status, 'torch' in sys.modules)
"""

# /proc takes no new files, whoever asks (root included, whom os.access always lets write).
UNWRITABLE = Path("/proc/ldm-test-out.png")


def run_probe(module, *args):
    """(exit status, torch imported, stderr) of `module`'s main(args) in a fresh interpreter."""
    process = subprocess.run([sys.executable, "-c", PROBE.format(module=module), *map(str, args)], capture_output=True, text=True)
    status, imported = process.stdout.split()
    return int(status), imported == "True", process.stderr


@pytest.fixture
def backbone():
    return "unet"  # the checks come before any model is read: one backbone is enough


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
    status, imported, stderr = run_probe(module, "a lake", "--steps", 1, *args)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: {message.replace('{tmp}', str(tmp_path))}"), stderr
    assert status == 2 and not imported
    assert not (tmp_path / "out.png").exists() and not UNWRITABLE.exists()
