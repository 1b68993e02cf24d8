"""Score upscalers on issue 26's targets: held-out scenes drawn at 512 px, downscaled to 128,
upscaled back by bicubic, Lanczos and (--model) a diffusion upscaler; PSNR, SSIM and Canny edge
F1 (2 px) against the true 512 px, each beside bicubic's, and seconds per image.

    python tools/evaluate_upscaler.py [--model NAME|DIR] [--n 32] [--steps N] [--noise-level N] \
        [--device cpu] [--out DIR]

Writes OUT/upscaler.md (also printed) and OUT/upscaler.json. Goals: edge F1 at least 1.5x
bicubic's, PSNR not below bicubic's (docs/upscaling.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from ldm.cli.common import OneLineArgumentParser, report_error
from ldm.files import write_file_atomic

PROG = "evaluate_upscaler.py"


def _parse_args(argv: list[str] | None):
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", metavar="NAME|DIR", help="an upscaler model to score beside the baselines (default: baselines only)")
    parser.add_argument("--n", type=int, default=32, help="held-out scenes (default 32)")
    parser.add_argument("--steps", type=int, help="the upscaler's steps (default: its own)")
    parser.add_argument("--noise-level", type=int, help="the upscaler's noise level (default: its own)")
    parser.add_argument("--device", default="cpu", help="device for the model (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("evaluation/upscaler"), help="output folder (default evaluation/upscaler)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    return args


def _methods(args, size: int) -> dict:
    from ldm.scenes.upscale_evaluation import model_method, resize_method

    methods = {"bicubic": resize_method(Image.BICUBIC, size), "lanczos": resize_method(Image.LANCZOS, size)}
    if args.model:
        from ldm.pipeline import Pipeline
        from ldm.pipeline.upscale import require_upscaler

        upscaler = Pipeline.load(args.model, device=args.device)
        require_upscaler(upscaler)
        options = {name: value for name, value in (("steps", args.steps), ("noise_level", args.noise_level)) if value is not None}
        methods[args.model] = model_method(upscaler, size, **options)
    return methods


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from ldm.errors import LdmError
    from ldm.scenes import upscale_evaluation as evaluation

    try:
        methods = _methods(args, evaluation.HIGH)
    except LdmError as error:
        return report_error(PROG, str(error))
    scenes = evaluation.held_out_scenes(args.n)
    results = {name: evaluation.evaluate_method(method, scenes) for name, method in methods.items()}
    report = evaluation.report_markdown(results, args.n)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(args.out / "upscaler.md", report + "\n")
    write_file_atomic(args.out / "upscaler.json", json.dumps({"scenes": args.n, "methods": evaluation.against_bicubic(results)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
