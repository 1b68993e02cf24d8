"""ldm-generate: text to image (or image to image, with --init-image) from a model folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ldm.cli.common import (
    OneLineArgumentParser,
    UsageError,
    add_model_arguments,
    check_embeddings_dir,
    check_writable,
    output_paths,
    resolve_device,
    load_pipeline_for,
    resolve_model_path,
    run_command,
    save_png_atomic,
)
from ldm.cli.control_options import PER_UNIT, add_control_arguments, control_units
from ldm.cli.options import add_limit_arguments, add_setting_arguments, limits_from_args, settings_from_args
from ldm.cli.upscale_options import add_upscale_argument, then_upscale, upscaler_path
from ldm.lora.refs import model_lora_dir
from ldm.settings import HIRES_FIELDS, GenerationError, Limits, Settings, check_input_size, check_settings, flag_of
from ldm.timing import Stopwatch

PROG = "ldm-generate"

EXAMPLES = """examples:
  ldm-generate "a lake at dawn" --cfg 7.5 --seed 1 --out lake.png
  ldm-generate "a snowy field at night with mountains and the moon on the left" --n 3 --seed 9 --out night/
  ldm-generate "a red boat" --model runs/boats/model --sampler euler-a --steps 30 --out boat.png
  ldm-generate "a castle" --model ~/sd-2-1-base --width 512 --height 768 --negative "blurry"
  ldm-generate "a lake at dawn with snowy mountains" --init-image lake.png --strength 0.6 --seed 0
  ldm-generate "a lake at dawn" --hires-scale 2 --hires-strength 0.5 --out lake-256.png
  ldm-generate "a meadow at dusk" --control layout.png --control-type layout
  ldm-generate "a lake at dawn" --control photo.jpg --control-type canny --control-scale 0.8 --control-end 0.6
  ldm-generate "a lake at dawn" --upscale runs/upscaler/model --seed 3 --out lake-x4.png

Image k of a run with --seed S equals a lone run with --seed S+k. Each PNG carries its
settings in a 'parameters' text chunk (AUTOMATIC1111 layout), so tools that read those
(and `ldm-generate` itself, later) can reproduce it.

A model may declare its own sampling defaults (model.yaml: `sampling: {sampler, steps, cfg}`,
e.g. lcm, 4 steps, cfg 1.5 for a distilled model): they apply where --sampler, --steps or
--cfg is not given, and the PNG parameters show the values used."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Generate images from a text prompt with a latent diffusion model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="what to draw")
    add_model_arguments(parser)
    add_setting_arguments(parser, ("txt2img", "img2img"))
    parser.add_argument(
        "--init-image",
        metavar="FILE",
        help="image to image: start from this picture (resized to --width/--height when given, "
        "else used at its own size rounded to multiples of 8)",
    )
    add_control_arguments(parser)
    add_upscale_argument(parser)
    add_output_arguments(parser)
    add_limit_arguments(parser)
    return parser


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ldm-generate and ldm-inpaint, beside the settings."""
    parser.add_argument(
        "--out",
        default="outputs",
        metavar="FILE_OR_DIR",
        help="a .png file, or a folder that receives NNNNN-SEED.png files (default: outputs/)",
    )
    parser.add_argument("--timings", action="store_true", help="print a wall-time breakdown on stderr")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    mode = "txt2img" if args.init_image is None else "img2img"
    if args.strength is not None and args.init_image is None:
        raise UsageError("--strength needs --init-image")
    hires = [flag_of(name) for name in HIRES_FIELDS if getattr(args, name) is not None]
    if hires and args.init_image is not None:
        raise UsageError(f"{hires[0]} is for text to image: the hires fix draws its own first picture (as in AUTOMATIC1111); drop --init-image")
    request = checked_request(args, mode)
    upscaler = upscaler_path(args.upscale) if args.upscale is not None else None
    # Project modules that pull in torch are imported after the cheap checks: --help and
    # a mistyped path answer at once.
    from ldm.images import ImageError, load_image

    clock.lap("imports")
    settings, limits = request.settings, request.limits
    try:
        init_image = load_image(args.init_image, "init image") if args.init_image else None
        if init_image is not None:
            check_input_size(settings, mode, init_image.size, limits)
    except (GenerationError, ImageError) as error:
        raise UsageError(str(error)) from None

    def generate(pipe):
        if init_image is None:
            return pipe.generate(settings, limits=limits, progress=not args.quiet)
        return pipe.img2img(settings, init_image, limits=limits, progress=not args.quiet)

    if upscaler is not None:
        generate = then_upscale(PROG, args, upscaler, limits, generate, clock)
    produce(PROG, args, request, generate, clock)
    return 0


@dataclass(frozen=True)
class Request:
    """What the cheap checks found good: the settings (with a concrete seed), limits, the
    model's path and where the images go."""

    settings: Settings
    limits: Limits
    model: Path
    paths: list[Path]


def checked_request(args: argparse.Namespace, mode: str) -> Request:
    """Every check that needs no model, so that bad input is told at once: the model's path,
    the settings, the ControlNet folders, the output's folder (created, and written to
    once); then the control images, whose reading imports torch."""
    model = resolve_model_path(args.model)
    settings, limits = checked_settings(args, mode, model)
    check_embeddings_dir(args)
    for folder in args.controlnet or ():
        if not Path(folder).is_dir():
            raise UsageError(f"ControlNet folder not found: {folder}")
    paths = output_paths(args.out, settings.n, settings.seed)
    check_writable(paths)
    if args.control:
        settings = settings.replace(controls=control_units(args))
        check(settings, mode, limits)
    return Request(settings, limits, model, paths)


def checked_settings(args: argparse.Namespace, mode: str, model: Path) -> tuple[Settings, Limits]:
    """The request's settings with a concrete seed (control units not yet read), and its limits."""
    settings = settings_from_args(args, mode).with_seed()
    if settings.lora_dir is None:  # LoRA names are checked now: look in the model's own loras/ too
        settings = settings.replace(lora_dir=model_lora_dir(model))
    if not args.control and (args.controlnet or any(getattr(args, f"control_{name}") for name, *_ in PER_UNIT.values())):
        raise UsageError("the control flags need a --control IMAGE")
    limits = limits_from_args(args)
    check(settings, mode, limits)
    return settings, limits


def check(settings: Settings, mode: str, limits: Limits) -> None:
    try:
        check_settings(settings, mode, limits)
    except GenerationError as error:
        raise UsageError(str(error)) from None


def produce(prog: str, args: argparse.Namespace, request: Request, generate, clock: Stopwatch) -> None:
    """Loads the model, runs `generate(pipeline)`, tells the result's notes, saves its images."""
    pipe = load_pipeline(prog, args, request.model, clock)
    try:
        result = generate(pipe)
    except GenerationError as error:
        raise UsageError(str(error)) from None
    finish(prog, args, result, request.paths, clock)


def load_pipeline(prog: str, args: argparse.Namespace, path: Path, clock: Stopwatch):
    from ldm.formats.model_folder import ModelError

    device = resolve_device(args.device)
    try:
        pipe = load_pipeline_for(prog, path, device, args.dtype, args.compile, tuple(args.controlnet or ()), args.embeddings_dir)
    except (ModelError, GenerationError) as error:
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
