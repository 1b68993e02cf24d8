"""ldm-convert: a model between formats: ours, diffusers folders, single original-layout files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli.common import ListModels, OneLineArgumentParser, UsageError, resolve_model_path, run_command
from ldm.cli.options import argparse_type
from ldm.lora.refs import parse_lora_flag, resolve_lora

PROG = "ldm-convert"
EXAMPLES = """examples:
  ldm-convert scenes scenes.safetensors                  the built-in model in one file (AUTOMATIC1111, ComfyUI)
  ldm-convert runs/scenes/model scenes-diffusers/        a diffusers folder
  ldm-convert sd-v1-5.safetensors sd15/                  a single file to a diffusers folder
  ldm-convert sd15/ sd15-style/ --lora style.safetensors:0.8    the LoRA merged into the weights

SRC is any model ldm loads (an ldm model folder, a diffusers folder, a .safetensors file in
the original layout of SD 1.x/2.x, SDXL or SD3, an SDXL refiner's folder or file, or a built-in model's name: --list-models; a path
wins). A DST ending in .safetensors is one file; anything else is a diffusers folder. Pickled
checkpoints (.ckpt) are refused. DST is never inside SRC (nor SRC inside DST); an existing
DST is replaced only with --overwrite (a file, or a diffusers folder), whole or not at all."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Convert a model to one .safetensors file (original SD layout) or a diffusers folder.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="model to read: a path or a built-in model's name")
    parser.add_argument("dst", help="FILE.safetensors or a folder")
    parser.add_argument(
        "--lora",
        action="append",
        type=argparse_type(parse_lora_flag),
        metavar="FILE[:WEIGHT]",
        help="merge this LoRA into the weights at WEIGHT (default 1); repeatable",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST (a file, or a diffusers folder)")
    parser.add_argument("--list-models", action=ListModels, help="list the built-in models (name, size, what they draw) and exit")
    return parser


def run(args: argparse.Namespace, clock) -> int:
    from ldm.cli.convert_target import check_target
    from ldm.formats.diffusers_conversion import save_as_diffusers
    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import ModelError, load_model_or_refiner
    from ldm.formats.single_file import save_single_file

    source, target = resolve_model_path(args.src), Path(args.dst)
    try:
        loras = [(resolve_lora(name, None), weight) for name, weight in args.lora or ()]
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_target(source, target, [path for path, _ in loras], args.overwrite)
    try:
        components = load_model_or_refiner(source)
        applied = apply_loras(components, loras)  # a LoRA that does not fit: an error before anything is written
        if target.suffix.lower() == ".safetensors":
            save_single_file(components, target, replace=args.overwrite)  # a file that appears meanwhile is kept too
        else:  # a copy of a diffusers SRC: its U-Net and the text encoders the LoRAs changed written anew
            save_as_diffusers(components, target, source=source, changed=applied.changed_parts())
    except ModelError as error:
        raise UsageError(str(error)) from None
    clock.lap("convert")
    print(f"{PROG}: wrote {target} ({clock.report()})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
