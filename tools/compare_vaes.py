"""Compare autoencoders by what each lets the scenes model reach at best: every evaluation
figure measured on real scenes after the VAE and back (where a perfect denoiser would end).

    python tools/compare_vaes.py scenes runs/vae-f4/vae [--n-per-prompt 4] [--vae-images 64] [--out DIR]

Each VAE is a built-in model's name, a model folder, or an autoencoder run's OUTPUT/vae. For
each: PSNR / SSIM on unseen scenes, the attribute judge's accuracy on the seen and held-out
prompts (the tree count and the house beside), the layout segmenter's region mIoU and the Canny
edge F1 (2 px) on the ControlNet evaluation's held-out scenes, and the latent grid. A target
above a VAE's figure cannot be met with that VAE. Writes OUT/vaes.md (also printed) and
OUT/vaes.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from ldm.cli.common import OneLineArgumentParser, report_error
from ldm.files import write_file_atomic

PROG = "compare_vaes.py"


def _targets() -> dict:
    """The evaluations' own targets, for the columns measured here."""
    from ldm.scenes.control_evaluation import TARGETS as CONTROL
    from ldm.scenes.model_evaluation import TARGETS as MODEL

    return {"psnr": MODEL["vae_psnr_db"], "seen": MODEL["seen_accuracy"], "heldout": MODEL["heldout_accuracy"],
            "layout": CONTROL["layout"][0], "canny": CONTROL["canny"][0]}  # fmt: skip


def _parse_args(argv):
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("vaes", nargs="+", metavar="VAE", help="built-in model name, model folder or autoencoder OUTPUT/vae")
    parser.add_argument("--n-per-prompt", type=int, default=4, help="real scenes per prompt, judged and segmented (default 4)")
    parser.add_argument("--vae-images", type=int, default=64, help="unseen scenes for PSNR/SSIM (default 64)")
    parser.add_argument("--size", type=int, default=128, help="scene size in pixels (default 128)")
    parser.add_argument("--out", type=Path, default=Path("evaluation/vaes"), metavar="DIR", help="report folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.n_per_prompt < 1 or args.vae_images < 1:
        parser.error("--n-per-prompt and --vae-images must be at least 1")
    if args.size < 16 or args.size % 8:
        parser.error(f"--size must be a multiple of 8 and at least 16, got {args.size}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return args


def _load_vae(name: str):
    from ldm.builtin_models import resolve_model
    from ldm.formats.model_folder import load_component

    vae, _ = load_component(resolve_model(name), "vae")
    return vae.float().eval()


def markdown(rows: dict[str, dict]) -> str:
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    def attribute(entry: dict, name: str) -> str:
        found = entry["per_attribute"].get(name)
        return "-" if found is None else percent(found["accuracy"])

    targets = _targets()
    lines = [
        "| VAE | latents | PSNR dB | SSIM | seen | held-out | trees (seen) | house (seen) | layout mIoU | canny F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| target | | {targets['psnr']:g} | | {percent(targets['seen'])} | {percent(targets['heldout'])} | | "
        f"| {targets['layout']:g} | {targets['canny']:g} |",
    ]
    for name, row in rows.items():
        accuracy, adherence, rec = row["accuracy"], row["adherence"], row["reconstruction"]
        lines.append(
            f"| {name} | {row['latents']} | {rec['psnr']:.2f} | {rec['ssim']:.3f} | {percent(accuracy['seen']['overall'])} "
            f"| {percent(accuracy['heldout']['overall'])} | {attribute(accuracy['seen'], 'trees')} "
            f"| {attribute(accuracy['seen'], 'house')} | {adherence['layout']:.3f} | {adherence['canny']:.3f} |"
        )
    lines += ["", "Layout IoU per region:", ""]
    regions = list(dict.fromkeys(region for row in rows.values() for region in row["layout_by_region"]))
    lines += ["| VAE | " + " | ".join(regions) + " |", "| --- |" + " ---: |" * len(regions)]
    for name, row in rows.items():
        by_region = row["layout_by_region"]
        lines.append(f"| {name} | " + " | ".join(f"{by_region[r]:.3f}" if r in by_region else "-" for r in regions) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from ldm.builtin_models import UnknownModelError
    from ldm.formats.model_folder import ModelError
    from ldm.pipeline import Pipeline
    from ldm.scenes.attribute_classifier import DEFAULT_CLASSIFIER_PATH, load_classifier
    from ldm.scenes.layout_segmenter import DEFAULT_SEGMENTER_PATH, load_segmenter
    from ldm.scenes.prompts import build_prompts
    from ldm.scenes.report import write_json
    from ldm.scenes.vae_ceilings import vae_ceilings

    try:
        vaes = {name: _load_vae(name) for name in args.vaes}  # every file checked before the long part
        classifier, segmenter = load_classifier(DEFAULT_CLASSIFIER_PATH), load_segmenter(DEFAULT_SEGMENTER_PATH)
        pipe = Pipeline.load("scenes", device="cpu")  # only its VAE slot is used: each VAE in turn
    except (ModelError, UnknownModelError) as error:
        return report_error(PROG, str(error))
    prompts = build_prompts("both", 2, 0)
    rows = {}
    for name, vae in vaes.items():
        pipe.components.vae = vae
        bar = None if args.quiet else (lambda items, name=name: tqdm(items, desc=name, unit="prompt"))
        row = vae_ceilings(pipe, classifier, segmenter, prompts, args.n_per_prompt, args.size, args.vae_images, bar)
        side = args.size // pipe.vae_scale
        row["latents"] = f"{side}x{side}x{vae.config.latent_channels}"
        rows[name] = row
    text = markdown(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(args.out / "vaes.md", text)
    write_json(rows, args.out / "vaes.json")
    print(text)
    print(f"wrote {args.out}/vaes.md, vaes.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
