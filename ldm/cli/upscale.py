"""ldm-upscale: pictures redrawn by a diffusion upscaler at its scale times their size."""

from __future__ import annotations

import argparse
import sys

from ldm.builtin_models import DEFAULT_UPSCALER
from ldm.cli.common import NumberedOutput, OneLineArgumentParser, UsageError, add_model_arguments, check_writable, output_paths, run_command
from ldm.cli.generate import add_output_arguments, check, finish
from ldm.cli.options import add_limit_arguments, add_setting_arguments, limits_from_args, settings_from_args
from ldm.cli.upscale_options import load_upscaler, upscaler_path
from ldm.lora.refs import model_lora_dir
from ldm.settings import GenerationError
from ldm.timing import Stopwatch

PROG = "ldm-upscale"
MODE = "upscale"

EXAMPLES = """examples:
  ldm-upscale lake.png --model ~/stable-diffusion-x4-upscaler --prompt "a lake at dawn" --out lake-x4.png
  ldm-upscale shots/*.png --model runs/upscaler/model --noise-level 40 --steps 30 --out big/
  ldm-upscale photo.jpg --model ~/x4 --tile 128 --sampler ddim --seed 3

The model is an upscaler: a folder trained with `stage: upscaler`, a diffusers-format x4
upscaler (StableDiffusionUpscalePipeline: model_index.json, unet/, vae/, low_res_scheduler/,
...), or a built-in upscaler's name. Each output is the input times the upscaler's scale (its
VAE's: 4 for Stable Diffusion's). The prompt steers what the detail looks like; --noise-level
noises the input first (0 keeps its every detail and flaw; higher lets the model redraw
more). A picture whose upscale does not fit in memory is upscaled in overlapping tiles. Each
PNG records its settings (AUTOMATIC1111's `parameters` layout)."""


UPSCALER_HELP = (
    "upscaler model folder (one trained with stage: upscaler, or a diffusers x4-upscaler folder) or a built-in "
    f"upscaler's name (--list-models; a path wins). Default: the built-in {DEFAULT_UPSCALER!r}, once installed."
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Upscale pictures with a diffusion upscaler (text-guided super-resolution).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="the pictures to upscale")
    add_model_arguments(parser, UPSCALER_HELP, prompts=False)  # an upscaler is never compiled (its warm-up draws txt2img)
    parser.add_argument("--prompt", default="", help="what the pictures show: steers the detail the upscaler draws")
    add_setting_arguments(parser, MODE, {"n": "upscales of each picture, seeds --seed, --seed + 1, ..."})
    add_output_arguments(parser)
    add_limit_arguments(parser)
    return parser


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    model = upscaler_path(args.model)
    settings = settings_from_args(args, MODE).replace(prompt=args.prompt).with_seed()
    if settings.lora_dir is None:
        settings = settings.replace(lora_dir=model_lora_dir(model))
    limits = limits_from_args(args)
    check(settings, MODE, limits)
    paths = upscale_paths(args.out, len(args.images), settings.n, settings.seed)
    check_writable(paths)
    # Project modules that pull in torch are imported after the cheap checks.
    from ldm.images import ImageError, load_image
    from ldm.pipeline import GenerationResult
    from ldm.pipeline.upscale import check_upscale_input

    clock.lap("imports")
    try:
        images = [load_image(path, "image") for path in args.images]
    except ImageError as error:
        raise UsageError(str(error)) from None
    pipe = load_upscaler(PROG, args, model, clock)
    result = GenerationResult(images=[])
    try:
        for image in images:  # every picture checked before any is upscaled
            check_upscale_input(pipe, settings, image.size, limits)
        for image in images:
            one = pipe.upscale(settings, image, limits=limits, progress=not args.quiet)
            result.images += one.images
            result.parameters += one.parameters
            result.add_notes_and_timings(one)
    except GenerationError as error:
        raise UsageError(str(error)) from None
    finish(PROG, args, result, paths, clock)
    return 0


def upscale_paths(out: str, inputs: int, n: int, seed: int) -> list:
    """Where the upscales go, picture by picture (n each): as ldm-generate names them, a
    folder's NNNNN-SEED.png with each upscale's own seed."""
    paths = output_paths(out, inputs * n, seed)
    return [
        NumberedOutput(path.with_name(f"{path.number():05d}-{seed + k % n}.png")) if isinstance(path, NumberedOutput) else path
        for k, path in enumerate(paths)
    ]


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
