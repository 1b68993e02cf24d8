"""What ldm-upscale and ldm-generate --upscale share: the upscaler's path (checked before any
import of torch), loading it, and generate-then-upscale."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ldm.builtin_models import DEFAULT_UPSCALER, UnknownModelError, resolve_upscaler
from ldm.cli.common import UsageError, load_pipeline_for, resolve_device
from ldm.settings import GenerationError, Limits
from ldm.timing import Stopwatch


def add_upscale_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upscale",
        nargs="?",
        const="",
        metavar="NAME|DIR",
        help="then redraw each image with a diffusion upscaler (4x for Stable Diffusion's x4 upscaler), with the "
        f"image's prompt and seed: a model folder or a built-in upscaler's name (default: {DEFAULT_UPSCALER}, "
        "once installed); write it after the prompt",
    )


def upscaler_path(name: str | None) -> Path:
    """--model of ldm-upscale, --upscale of ldm-generate ('' or None: the built-in upscaler)."""
    try:
        return resolve_upscaler(name or None)
    except UnknownModelError as error:
        raise UsageError(f"{error}; see --list-models") from None


def load_upscaler(prog: str, args: argparse.Namespace, path: Path, clock: Stopwatch):
    """The upscaler's Pipeline on --device/--dtype (never compiled: its warm-up draws txt2img);
    a model that is not an upscaler is a one-line error."""
    from ldm.formats.model_folder import ModelError
    from ldm.pipeline.upscale import require_upscaler

    try:
        pipe = load_pipeline_for(prog, path, resolve_device(args.device), args.dtype, compile=False)
        require_upscaler(pipe)
    except (ModelError, GenerationError) as error:
        raise UsageError(str(error)) from None
    clock.lap("load upscaler")
    return pipe


def then_upscale(prog: str, args: argparse.Namespace, path: Path, limits: Limits, generate: Callable, clock: Stopwatch) -> Callable:
    """`generate(pipe)` followed by the upscaler at `path` on each of its images (loaded, and
    checked to be an upscaler, before any generating)."""

    def generate_then_upscale(pipe):
        upscaler = load_upscaler(prog, args, path, clock)
        return upscaler.upscale_result(generate(pipe), limits=limits, progress=not args.quiet)

    return generate_then_upscale
