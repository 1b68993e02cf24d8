"""ldm-inpaint: repaint the masked part of an image (or outpaint beyond its border)."""

from __future__ import annotations

import argparse
import sys

from ldm.cli.common import UsageError, add_model_arguments, check_writable, output_paths, run_command
from ldm.cli.generate import add_output_argument, add_sampling_arguments, finish, load_pipeline
from ldm.timing import Stopwatch

PROG = "ldm-inpaint"
DEFAULT_MASK_BLUR = 4.0  # AUTOMATIC1111's default

EXAMPLES = """examples:
  ldm-inpaint "a red boat" --image lake.png --mask boat-mask.png
  ldm-inpaint "a cat on the sofa" --image room.png --mask sofa.png --strength 0.8 --n 4 --out cats/
  ldm-inpaint "a small bird" --image big-photo.jpg --mask bird.png --crop-to-mask 32 --mask-blur 8
  ldm-inpaint "a wide beach" --image beach.png --pad 128,0,128,0 --out wide-beach.png

The mask is any image: white = repaint, black = keep (grey: thresholded at half, after
--mask-blur); transparent pixels count as black. The result is blended over the input
through the mask feathered by --mask-blur, so pixels away from the mask are the input's
exactly. Models with a 9-channel (inpainting) U-Net see the mask; others keep the
unmasked part of the image at every step."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Repaint the masked part of an image from a text prompt with a latent diffusion model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="what to paint in the masked region")
    parser.add_argument("--image", metavar="FILE", help="the picture to edit (required)")
    parser.add_argument(
        "--mask",
        metavar="FILE",
        help="white = repaint, black = keep; resized to the image if needed (required unless --pad)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="S",
        help="how much of the masked region is repainted: below 1 starts from the noised image (default 1)",
    )
    parser.add_argument(
        "--mask-blur",
        type=float,
        default=DEFAULT_MASK_BLUR,
        metavar="PX",
        help=f"Gaussian blur (sigma, pixels) of the mask before thresholding, and the feather of the "
        f"blend over the input; 0: hard edges (default {DEFAULT_MASK_BLUR:g})",
    )
    parser.add_argument(
        "--crop-to-mask",
        type=int,
        metavar="PADDING",
        help="inpaint only a crop around the mask (PADDING pixels wider on each side) at the model's "
        "resolution (or --width/--height) and paste it back: small edits on large images",
    )
    parser.add_argument(
        "--pad",
        metavar="LEFT,TOP,RIGHT,BOTTOM",
        help="outpaint: extend the canvas by these many pixels (one number: all sides) and paint the new border",
    )
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument(
        "--width",
        type=int,
        help="width the region is inpainted at, a multiple of 8 (default: the image's, rounded; "
        "with --crop-to-mask the model's); the output keeps the input's size",
    )
    parser.add_argument("--height", type=int, help="height the region is inpainted at (as --width)")
    parser.add_argument("--batch-size", type=int, help="images per U-Net batch (default: all --n at once)")
    add_output_argument(parser)
    return parser


def parse_pad(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 4
    if len(values) != 4:
        raise UsageError(f"--pad must be LEFT,TOP,RIGHT,BOTTOM (or one number) in pixels, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    import random

    # Project modules that pull in torch are imported after parsing: --help stays instant.
    from ldm.images import ImageError, load_image
    from ldm.pipeline import GenerationError, check_inpaint_request, check_request

    clock.lap("imports")
    # Check cheap things before loading anything.
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if args.image is None:
        raise UsageError("--image is required: the picture to inpaint")
    if args.mask is None and args.pad is None:
        raise UsageError("--mask is required (white = repaint, black = keep), or --pad to outpaint")
    pad = parse_pad(args.pad)
    try:
        check_request(args.width, args.height, args.steps, args.cfg, args.sampler, args.n, args.strength)
        check_inpaint_request(args.mask_blur, args.crop_to_mask, pad)
        image = load_image(args.image, "image")
        mask = load_image(args.mask, "mask") if args.mask else None
    except (GenerationError, ImageError) as error:
        raise UsageError(str(error)) from None
    paths = output_paths(args.out, args.n, seed)
    check_writable(paths)
    pipe = load_pipeline(args, clock)
    try:
        result = pipe.inpaint(
            args.prompt,
            image,
            mask,
            strength=args.strength,
            mask_blur=args.mask_blur,
            crop_to_mask=args.crop_to_mask,
            pad=pad,
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
    except GenerationError as error:
        raise UsageError(str(error)) from None
    finish(PROG, args, result, paths, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
