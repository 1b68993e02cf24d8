"""Score upscalers on issue 26's targets: held-out scenes drawn at 512 px, downscaled to 128,
upscaled back by bicubic, Lanczos and (--model) a diffusion upscaler; PSNR, SSIM and Canny edge
F1 (2 px) against the true 512 px, each beside bicubic's, and seconds per image.

    python tools/evaluate_upscaler.py [--model NAME|DIR] [--n 32] [--steps N] [--noise-level N] \
        [--judge N] [--device cpu] [--out DIR]

Writes OUT/upscaler.md (also printed) and OUT/upscaler.json. Goals: edge F1 at least 1.5x
bicubic's, PSNR not below bicubic's (docs/upscaling.md). --judge N: the built-in model also
draws N pictures per evaluation prompt; the attribute judge reads them before and after the
upscale (brought back to 128 px); goal: accuracy within 1 point."""

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
    parser.add_argument("--judge", type=int, default=0, metavar="N", help="with --model: also judge N pictures per prompt before and after upscaling (default 0: off)")
    parser.add_argument("--device", default="cpu", help="device for the model (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("evaluation/upscaler"), help="output folder (default evaluation/upscaler)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.judge < 0 or (args.judge and not args.model):
        parser.error("--judge N takes N >= 0 and goes with --model")
    return args


def _options(args) -> dict:
    return {name: value for name, value in (("steps", args.steps), ("noise_level", args.noise_level)) if value is not None}


def _methods(args, upscaler, size: int) -> dict:
    from ldm.scenes.upscale_evaluation import model_method, resize_method

    methods = {"bicubic": resize_method(Image.BICUBIC, size), "lanczos": resize_method(Image.LANCZOS, size)}
    if upscaler is not None:
        methods[args.model] = model_method(upscaler, size, **_options(args))
    return methods


def _load_upscaler(args):
    if not args.model:
        return None
    from ldm.builtin_models import resolve_model
    from ldm.pipeline import Pipeline
    from ldm.pipeline.upscale import require_upscaler

    upscaler = Pipeline.load(resolve_model(args.model), device=args.device)
    require_upscaler(upscaler)
    return upscaler


def _judged(args, upscaler) -> dict:
    """The attribute judge's accuracy on the built-in model's pictures before and after the upscale."""
    from tqdm import tqdm

    from ldm.builtin_models import resolve_model
    from ldm.pipeline import Pipeline
    from ldm.scenes.attribute_classifier import DEFAULT_CLASSIFIER_PATH, load_classifier
    from ldm.scenes.prompts import build_prompts
    from ldm.scenes.upscale_judging import judge_upscaled

    base = Pipeline.load(resolve_model(None), device=args.device)
    classifier = load_classifier(DEFAULT_CLASSIFIER_PATH, device=args.device)
    bar = lambda items: tqdm(items, desc="judged prompts", unit="prompt", file=sys.stderr)  # noqa: E731
    return judge_upscaled(base, upscaler, classifier, build_prompts("both", 2, 0), args.judge, progress=bar, **_options(args))


def _judged_markdown(judged: dict, n: int) -> str:
    lines = ["", f"Attribute judge, {n} pictures per prompt by the built-in model, before and after the upscale:", "",
             "| group | before | after | change (points) |", "|---|---|---|---|"]  # fmt: skip
    for group in ("seen", "heldout", "all"):
        before, after = judged["before"][group]["overall"], judged["after"][group]["overall"]
        if before is not None:
            lines.append(f"| {group} | {100 * before:.1f}% | {100 * after:.1f}% | {100 * (after - before):+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from ldm.errors import LdmError
    from ldm.scenes import upscale_evaluation as evaluation

    try:
        upscaler = _load_upscaler(args)
    except LdmError as error:
        return report_error(PROG, str(error))
    scenes = evaluation.held_out_scenes(args.n)
    results = {name: evaluation.evaluate_method(method, scenes) for name, method in _methods(args, upscaler, evaluation.HIGH).items()}
    report = evaluation.report_markdown(results, args.n)
    record = {"scenes": args.n, "methods": evaluation.against_bicubic(results)}
    if args.judge:
        record["judge"] = {"per_prompt": args.judge, **_judged(args, upscaler)}
        report += "\n" + _judged_markdown(record["judge"], args.judge)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(args.out / "upscaler.md", report + "\n")
    write_file_atomic(args.out / "upscaler.json", json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
