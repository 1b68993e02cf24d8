"""ldm-generate: text to image (or image to image, with --init-image) from a model folder."""

from __future__ import annotations

import argparse
import sys

from ldm.cli.common import (
    UsageError,
    add_model_arguments,
    check_writable,
    output_paths,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    run_command,
    save_png_atomic,
)
from ldm.diffusion.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES
from ldm.timing import Stopwatch

PROG = "ldm-generate"
DEFAULT_STRENGTH = 0.75  # img2img: AUTOMATIC1111's default denoising strength

EXAMPLES = """examples:
  ldm-generate "a lake at dawn" --cfg 7.5
  ldm-generate "snowy mountains at night" --n 4 --seed 7 --out night/
  ldm-generate "a red boat" --model runs/boats/model --sampler euler-a --steps 30 --out boat.png
  ldm-generate "a castle" --model ~/sd-2-1-base --width 512 --height 768 --negative "blurry"
  ldm-generate "the same street in winter" --init-image street.png --strength 0.6

Image k of a run with --seed S equals a lone run with --seed S+k. Each PNG carries its
settings in a 'parameters' text chunk (AUTOMATIC1111 layout), so tools that read those
(and `ldm-generate` itself, later) can reproduce it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate images from a text prompt with a latent diffusion model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="what to draw")
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--width", type=int, help="image width in pixels, a multiple of 8 (default: the model's size)")
    parser.add_argument("--height", type=int, help="image height in pixels, a multiple of 8 (default: the model's size)")
    parser.add_argument("--batch-size", type=int, help="images per U-Net batch (default: all --n at once)")
    parser.add_argument(
        "--init-image",
        metavar="FILE",
        help="image to image: start from this picture (resized to --width/--height when given, "
        "else used at its own size rounded to multiples of 8)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help=f"with --init-image: how much of it is repainted, 0 (returned as is, through the VAE) "
        f"to 1 (ignored: plain text to image) (default {DEFAULT_STRENGTH})",
    )
    add_output_argument(parser)
    return parser


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="outputs",
        metavar="FILE_OR_DIR",
        help="a .png file, or a folder that receives NNNNN-SEED.png files (default: outputs/)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ldm-generate and ldm-inpaint."""
    parser.add_argument("--negative", default="", metavar="TEXT", help="negative prompt: what to steer away from")
    parser.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale; <= 1 turns guidance off (default 7.5)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        metavar="NAME",
        help=f"one of {', '.join(SAMPLER_NAMES)} (default {DEFAULT_SAMPLER})",
    )
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random, printed)")
    parser.add_argument("--n", type=int, default=1, help="number of images (default 1)")
    parser.add_argument("--timings", action="store_true", help="print a wall-time breakdown on stderr")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    import random

    from ldm.images import ImageError, load_image
    from ldm.pipeline import GenerationError, check_request

    clock.lap("imports")
    # Check cheap things before loading anything.
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if args.strength is not None and args.init_image is None:
        raise UsageError("--strength needs --init-image")
    strength = args.strength if args.strength is not None else DEFAULT_STRENGTH
    try:
        check_request(args.width, args.height, args.steps, args.cfg, args.sampler, args.n, strength)
        init_image = load_image(args.init_image, "init image") if args.init_image else None
    except (GenerationError, ImageError) as error:
        raise UsageError(str(error)) from None
    paths = output_paths(args.out, args.n, seed)
    check_writable(paths)
    pipe = load_pipeline(args, clock)
    options = dict(
        negative=args.negative,
        n=args.n,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        seed=seed,
        width=args.width,
        height=args.height,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    try:
        if init_image is None:
            result = pipe.generate(args.prompt, **options)
        else:
            result = pipe.img2img(args.prompt, init_image, strength, **options)
    except GenerationError as error:
        raise UsageError(str(error)) from None
    finish(PROG, args, result, paths, clock)
    return 0


def load_pipeline(args: argparse.Namespace, clock: Stopwatch):
    from ldm.model_folder import ModelError, load_model
    from ldm.pipeline import Pipeline

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    try:
        pipe = Pipeline(load_model(resolve_model_path(args.model), device=device, dtype=dtype))
    except ModelError as error:
        raise UsageError(str(error)) from None
    clock.lap("load")
    return pipe


def finish(prog: str, args: argparse.Namespace, result, paths, clock: Stopwatch) -> None:
    """Tells the user the result's notes, saves its images, reports the timings."""
    clock.lap("generate")
    for note in result.notes:
        print(f"{prog}: {note}", file=sys.stderr)
    # Split the generate section into the pipeline's own parts.
    generate_total = clock.sections.pop("generate")
    clock.sections.update(result.timings)
    clock.sections["other"] = generate_total - sum(result.timings.values())
    save_all(result, paths)
    clock.lap("save")
    if args.timings:
        print(clock.report(), file=sys.stderr)


def save_all(result, paths) -> None:
    for image, parameters, path in zip(result.images, result.parameters, paths):
        try:
            path = save_png_atomic(image, path, parameters.png_info())  # the next number if a concurrent run took it
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
        print(f"{path}  (seed {parameters.seed})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
