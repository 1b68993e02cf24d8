"""ldm-inpaint: repaint the masked part of an image (or outpaint beyond its border)."""

from __future__ import annotations

import argparse
import sys

from ldm.cli.common import OneLineArgumentParser, UsageError, add_model_arguments, run_command
from ldm.cli.control_options import add_control_arguments
from ldm.cli.generate import add_output_arguments, checked_request, produce
from ldm.cli.options import add_limit_arguments, add_setting_arguments
from ldm.settings import GenerationError, check_input_size
from ldm.timing import Stopwatch

PROG = "ldm-inpaint"
# This command's own words for shared settings.
HELPS = {
    "strength": "how much of the masked region is repainted: below 1 starts from the noised image (default 1)",
    "width": "width the region is inpainted at, a multiple of 8 (default: the image's, rounded; "
    "with --crop-to-mask the model's); the output keeps the input's size",
    "height": "height the region is inpainted at (as --width)",
}

EXAMPLES = """examples:
  ldm-inpaint "a lake at dawn with snowy mountains" --image lake.png --mask sky-mask.png --seed 0
  ldm-inpaint "a cat on the sofa" --model ~/sd15 --image room.png --mask sofa.png --strength 0.8 --n 4 --out cats/
  ldm-inpaint "a meadow at noon with three trees" --image big-photo.jpg --mask trees.png --crop-to-mask 32 --mask-blur 8
  ldm-inpaint "a lake at dawn" --image lake.png --pad 32,0,32,0 --seed 0 --out wide-lake.png

The mask is any image: white = repaint, black = keep (grey: thresholded at half, after
--mask-blur); transparent pixels count as black. The result is blended over the input
through the mask feathered by --mask-blur, so pixels away from the mask are the input's
exactly. Models with a 9-channel (inpainting) U-Net see the mask; others keep the
unmasked part of the image at every step."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
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
    add_model_arguments(parser)
    add_setting_arguments(parser, "inpaint", HELPS)
    add_control_arguments(parser)
    add_output_arguments(parser)
    add_limit_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    if args.image is None:
        raise UsageError("--image is required: the picture to inpaint")
    if args.mask is None and args.pad is None:
        raise UsageError("--mask is required (white = repaint, black = keep), or --pad to outpaint")
    request = checked_request(args, "inpaint")
    # Project modules that pull in torch are imported after the cheap checks: --help and
    # a mistyped path answer at once.
    from ldm.images import ImageError, load_image

    clock.lap("imports")
    settings, limits = request.settings, request.limits
    try:
        image = load_image(args.image, "image")
        mask = load_image(args.mask, "mask") if args.mask else None
        check_input_size(settings, "inpaint", image.size, limits)
    except (GenerationError, ImageError) as error:
        raise UsageError(str(error)) from None
    produce(PROG, args, request, lambda pipe: pipe.inpaint(settings, image, mask, limits=limits, progress=not args.quiet), clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
