"""What every ldm command shares: device/dtype choice, the model argument, error exits,
and atomic PNG writing. Nothing heavy is imported at module level, so `--help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

DTYPES = ("auto", "fp32", "fp16", "bf16")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_command(prog: str, run, args: argparse.Namespace) -> int:
    """Runs `run(args, clock)`; bad input and Ctrl-C end in one line on stderr, no traceback."""
    from ldm.timing import Stopwatch

    try:
        return run(args, Stopwatch())
    except KeyboardInterrupt:
        fail(prog, "interrupted", status=130)
    except UsageError as error:
        fail(prog, str(error))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="model folder: one written by ldm-train, or a diffusers-format Stable Diffusion "
        "folder (model_index.json, unet/, vae/, text_encoder/, ...). Default: the built-in demo model.",
    )
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (default: cuda if present, else cpu)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights and activations precision (default: fp16 on GPU, fp32 on CPU)",
    )


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r} asked for, but MPS is not available")
    return device


def resolve_dtype(name: str, device):
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def resolve_model_path(model: str | None) -> Path:
    if model:
        return Path(model)
    from ldm.default_model import default_model_path

    path = default_model_path()
    if path is None:
        raise UsageError("no --model given and no built-in model is installed; pass --model DIR")
    return path


def output_paths(out: str, n: int, first_seed: int) -> list[Path]:
    """FILE.png: that file (FILE-k.png for several); otherwise a folder of NNNNN-SEED.png,
    numbered after the files already there so nothing is overwritten."""
    target = Path(out)
    if target.suffix.lower() == ".png":
        if n == 1:
            return [target]
        return [target.with_name(f"{target.stem}-{k}.png") for k in range(n)]
    existing = [p.name[:5] for p in target.glob("*.png")] if target.is_dir() else []
    start = 1 + max((int(s) for s in existing if s.isdigit()), default=-1)
    return [target / f"{start + k:05d}-{first_seed + k}.png" for k in range(n)]


def check_writable(paths: list[Path]) -> None:
    """Fails before any work if the outputs cannot be written (parent not creatable or not writable)."""
    for parent in {p.parent for p in paths}:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create output folder {parent}: {error.strerror}") from None
        if not os.access(parent, os.W_OK):
            raise UsageError(f"output folder {parent} is not writable")
    for path in paths:
        if path.is_dir():
            raise UsageError(f"output {path} is a folder")


def save_png_atomic(image, path: Path, pnginfo=None) -> None:
    """Writes to a temporary file beside `path` and renames it: no half-written PNGs."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        image.save(temp, format="PNG", pnginfo=pnginfo)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

