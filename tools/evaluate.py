"""Evaluate a text-to-image model on the scenes domain: attribute accuracy on seen and
held-out combinations, diversity, VAE reconstruction, speed.

    python tools/evaluate.py --model DIR [--classifier PATH] [--n-per-prompt 8] [--steps 20] \
        [--sampler dpm++2m] [--cfg 7.5] [--seed 0] [--size 128] [--out DIR] \
        [--prompts seen|heldout|both|FILE] [--prompts-per-pair 2] [--vae-images 64] [--device cpu]

Writes OUT/report.md (also printed), OUT/report.json (every number, and each image's
predicted attributes), OUT/grid.png (samples of a few seen and held-out prompts) and
OUT/prompts.jsonl (the prompts with the attributes they assert; a valid FILE for --prompts,
as is a make_scenes metadata.jsonl). The issue's targets are stated for 20 steps dpm++2m,
cfg 7.5 at 128 px: the defaults.

A taught concept: `--prompts windmill` (the seen prompts with a windmill added) with a judge
that has its head (`--classifier ldm/scenes/weights/scene_attributes_windmill.safetensors`),
before and after `--lora FILE[:WEIGHT]`.

--control layout|canny evaluates the model's ControlNet of that type instead (or --controlnet DIR):
scenes of each prompt drawn from a reserved seed give the control images (a layout map, or the
picture for canny), the model draws each prompt with and without it on the same seed, timed side
by side; adherence is the region mIoU read by the layout segmenter (--segmenter, default the
shipped one) or the Canny edge F1 at 2 px, with the attribute accuracy both ways. Writes
OUT/control.md, control.json and control.png (control, with, without):

    python tools/evaluate.py --control layout --n-per-prompt 4 --out evaluation/layout

--memorization DATA (a folder of images or a training config, as `ldm-data dedupe` reads) adds the
memorization check: each generated image's nearest training images by dedupe's perceptual-hash
distance, and the near-copies: generated images closer to a training image than a new real picture
is 99% of the time (threshold calibrated on a seeded 10% of DATA held out against the rest, or on
--memorization-heldout DIR, real pictures not in DATA). Adds a section to report.md, "memorization"
to report.json and OUT/memorization.png (the closest pairs, generated | training). docs/data.md.

--sweep [MODEL@]SAMPLER:STEPS[:CFG],... evaluates each point instead (no VAE test, no grid) and
writes OUT/sweep.md, sweep.json and sweep.png: accuracy against seconds per image, timed side
by side in one run, e.g. a distilled model against its teacher:

    python tools/evaluate.py --sweep scenes@dpm++2m:20,scenes-lcm@lcm:1,scenes-lcm@lcm:2,scenes-lcm@lcm:4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ldm.cli.common import OneLineArgumentParser, report_error, save_png_atomic
from ldm.errors import LdmError
from ldm.files import write_file_atomic
from ldm.scenes.prompts import PROMPT_SETS  # light: no torch model code runs
from ldm.scenes.sweep import SweepPoint, parse_sweep
from ldm.lora.refs import parse_lora_flag

PROG = "evaluate.py"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", metavar="DIR", help="model folder (default: the built-in demo model)")
    parser.add_argument(
        "--checkpoint", metavar="DIR", type=Path,
        help="a text2img run's checkpoint (RUN/checkpoints/step-N) to judge, with --model the run's exported model folder",
    )
    parser.add_argument("--classifier", metavar="PATH", type=Path, help="attribute classifier .safetensors (default: the shipped one)")
    parser.add_argument("--n-per-prompt", type=int, default=8, help="images per prompt (default 8)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--sampler", default="dpm++2m", help="sampler name (default dpm++2m)")
    parser.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image k of prompt p uses seed + p*N + k")
    parser.add_argument("--size", type=int, default=128, help="image and VAE test size in pixels (multiple of 8, >= 16)")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), metavar="DIR", help="report folder (default evaluation/)")
    parser.add_argument(
        "--prompts", default="both", metavar="SET_OR_FILE", help=f"{'|'.join(PROMPT_SETS)} or a JSON-lines FILE (default both)"
    )
    parser.add_argument("--prompts-per-pair", type=int, default=2, help="prompts per (setting, time of day) pair (default 2)")
    parser.add_argument("--vae-images", type=int, default=64, help="unseen scenes for VAE PSNR/SSIM; 0 skips (default 64)")
    parser.add_argument(
        "--sweep", metavar="POINTS",
        help="comma-separated [MODEL@]SAMPLER:STEPS[:CFG] points to compare (MODEL default --model, CFG default --cfg)",
    )
    parser.add_argument(
        "--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a LoRA applied to every image (repeatable)"
    )
    parser.add_argument(
        "--control", choices=("layout", "canny"),
        help="evaluate the model's ControlNet of this type instead: adherence on held-out scenes, with and without control",
    )
    parser.add_argument("--controlnet", metavar="DIR", help="with --control: a ControlNet folder (default: the model's own)")
    parser.add_argument("--control-scale", type=float, default=1.0, help="with --control: ControlNet weight (default 1)")
    parser.add_argument("--segmenter", metavar="PATH", type=Path, help="layout segmenter .safetensors (default: the shipped one)")
    parser.add_argument(
        "--memorization", metavar="DATA",
        help="also find near-copies of training images: DATA is a folder of images or a training config (as ldm-data dedupe reads)",
    )
    parser.add_argument(
        "--memorization-heldout", metavar="DIR",
        help="real pictures not in DATA to calibrate the near-copy threshold on (default: 10%% of DATA held out)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("n_per_prompt", "steps", "prompts_per_pair"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.vae_images < 0:
        parser.error(f"--vae-images must not be negative, got {args.vae_images}")
    if args.size < 16 or args.size % 8:
        parser.error(f"--size must be a multiple of 8 and at least 16, got {args.size}")
    if args.prompts not in PROMPT_SETS and not Path(args.prompts).is_file():
        parser.error(f"--prompts must be one of {', '.join(PROMPT_SETS)} or an existing file, got {args.prompts!r}")
    if args.control and args.sweep:
        parser.error("--control and --sweep are separate evaluations: give one")
    if args.control and args.lora:
        parser.error("--lora is not applied in a --control evaluation: evaluate the LoRA on its own")
    if (args.controlnet or args.segmenter) and not args.control:
        parser.error("--controlnet and --segmenter go with --control layout|canny")
    if not args.control_scale >= 0:
        parser.error(f"--control-scale must be a number >= 0, got {args.control_scale}")
    if args.memorization and (args.control or args.sweep):
        parser.error("--memorization goes with the standard evaluation, not --control or --sweep")
    if args.memorization_heldout and not args.memorization:
        parser.error("--memorization-heldout goes with --memorization DATA")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    import torch

    from ldm.formats.model_folder import ModelError
    from ldm.builtin_models import UnknownModelError, resolve_model
    from ldm.scenes.attribute_classifier import DEFAULT_CLASSIFIER_PATH, load_classifier
    from ldm.scenes.model_evaluation import EvalSettings, evaluate_model
    from ldm.scenes.prompts import build_prompts, read_prompt_file
    from ldm.scenes.report import markdown_report, write_json
    from ldm.data.nearest import memorization_markdown
    from ldm.scenes.sample_grid import pick_rows, sample_grid
    from ldm.control.library import ControlNets
    from ldm.pipeline import Pipeline
    from ldm.training.checkpoints import CheckpointError, load_denoiser_from_checkpoint
    from ldm.settings import GenerationError, Settings, check_settings

    try:
        points = parse_sweep(args.sweep) if args.sweep else [SweepPoint(None, args.sampler, args.steps, None)]
        for point in points:
            cfg = args.cfg if point.cfg is None else point.cfg
            request = Settings(width=args.size, height=args.size, steps=point.steps, cfg=cfg, sampler=point.sampler)
            check_settings(request.replace(n=args.n_per_prompt), "txt2img")
    except (ValueError, GenerationError) as error:
        return report_error(PROG, str(error))
    try:
        if args.prompts in PROMPT_SETS:
            prompts = build_prompts(args.prompts, args.prompts_per_pair, args.seed)
        else:
            prompts = read_prompt_file(args.prompts)
    except ValueError as error:
        return report_error(PROG, str(error))
    try:
        loras = tuple((str(path), weight) for path, weight in map(parse_lora_flag, args.lora))
    except ValueError as error:
        return report_error(PROG, str(error))
    missing = [path for path, _ in loras if not Path(path).is_file()]
    if missing:
        return report_error(PROG, f"LoRA file not found: {missing[0]}")
    try:  # before any image is generated: a bad DATA is told at once
        training = prepare_memorization(args) if args.memorization else None
    except LdmError as error:
        return report_error(PROG, str(error).splitlines()[0])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else torch.device(args.device)
    pipes = {}
    try:
        for name in dict.fromkeys(point.model or args.model for point in points):
            pipes[name] = Pipeline.load(resolve_model(name), device=device)
            if args.controlnet:  # that one only: the model's own of the same type must not compete
                pipes[name].controlnets = ControlNets.for_model(None, [args.controlnet])
            if args.checkpoint and name == args.model:
                load_denoiser_from_checkpoint(args.checkpoint, pipes[name].components.denoiser)
        classifier = load_classifier(args.classifier or DEFAULT_CLASSIFIER_PATH, device=device)
    except (UnknownModelError, ModelError, CheckpointError, GenerationError) as error:
        return report_error(PROG, str(error))
    unjudged = sorted({name for p in prompts for name in p.asserts} - set(classifier.config.heads))
    if unjudged:
        return report_error(PROG, f"the judge has no {unjudged[0]!r} head: train one with tools/train_attribute_classifier.py "
                                  f"--concept {unjudged[0]} and pass it as --classifier")  # fmt: skip
    bar = None if args.quiet else (lambda items: tqdm(items, desc="prompts", unit="prompt", file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.control:
        return run_control(args, pipes[args.model], classifier, prompts, bar, device)
    if args.sweep:
        return run_sweep(args, points, pipes, classifier, prompts, bar, device, loras)

    model_path = resolve_model(args.model)
    settings = EvalSettings(
        n_per_prompt=args.n_per_prompt,
        steps=args.steps,
        sampler=args.sampler,
        cfg=args.cfg,
        seed=args.seed,
        size=args.size,
        vae_images=args.vae_images,
        loras=loras,
    )
    report, results = evaluate_model(pipes[args.model], classifier, prompts, settings, progress=bar)
    report["model"] = str(model_path)
    report["checkpoint"] = str(args.checkpoint) if args.checkpoint else None
    report["classifier"] = {
        "path": str(args.classifier or DEFAULT_CLASSIFIER_PATH),
        "accuracy_on_fresh_scenes": classifier.metadata.get("accuracy"),
    }

    markdown = markdown_report(report, model_path.name)
    written = "report.md, report.json, grid.png, prompts.jsonl"
    if training is not None:
        report["memorization"], sheet = check_memorization(training, results, settings)
        markdown += "\n" + memorization_markdown(report["memorization"])
        save_png_atomic(sheet, args.out / "memorization.png")
        written += ", memorization.png"
    # Each file replaced whole: a crash leaves the previous evaluation's, never half of one.
    write_file_atomic(args.out / "report.md", markdown)
    write_json(report, args.out / "report.json")
    save_png_atomic(sample_grid(pick_rows(results)), args.out / "grid.png")
    write_file_atomic(args.out / "prompts.jsonl", "".join(json.dumps(p.to_dict()) + "\n" for p in prompts))
    print(markdown)
    print(f"wrote {args.out}/{written.replace(', ', f', {args.out}/')}", file=sys.stderr)
    return 0


def prepare_memorization(args):
    """The training images' hashes and the calibrated threshold (LdmError on bad data)."""
    from types import SimpleNamespace

    from ldm.cli.data import data_source
    from ldm.data.errors import DataError
    from ldm.data.listing import list_folder, list_samples
    from ldm.data.nearest import HELDOUT_FRACTION, calibrate, hash_samples, split_heldout

    kind, source = data_source(SimpleNamespace(data=args.memorization, overrides=[]))

    def listing():
        return list_folder(source, "--memorization") if kind == "folder" else list_samples(source)

    first = listing()  # a second listing reads the closest pairs' training images afterwards
    described = first.description
    print(f"memorization: hashing {described}", file=sys.stderr)
    keys, codes, _ = hash_samples(first.samples)
    if not keys:
        raise DataError(f"no readable image in {described}")
    if args.memorization_heldout:
        _, heldout, _ = hash_samples(list_folder(args.memorization_heldout, "--memorization-heldout").samples)
        if not len(heldout):
            raise DataError(f"no readable image in --memorization-heldout {args.memorization_heldout}")
        calibration = calibrate(heldout, codes, f"{args.memorization_heldout} against all of DATA")
    else:
        held, rest = split_heldout(len(keys))
        calibration = calibrate(codes[held], codes[rest], f"a seeded {HELDOUT_FRACTION:.0%} of DATA against the rest")
    return SimpleNamespace(keys=keys, codes=codes, calibration=calibration, described=described, listing=listing)


def check_memorization(training, results, settings):
    """(the report's memorization section, the sheet of the closest pairs)."""
    from ldm.data.nearest import hash_codes, match_generated, memorization_report, pairs_sheet, read_images

    images, keys = {}, []
    for p, result in enumerate(results):
        for k, image in enumerate(result.images):
            key = f"prompt {p} image {k} (seed {settings.seed + p * settings.n_per_prompt + k})"
            images[key] = image
            keys.append(key)
    matches = match_generated(keys, hash_codes(images[key] for key in keys), training.keys, training.codes)
    report = memorization_report(matches, training.calibration, training.described)
    closest = matches[:8]
    originals = read_images(training.listing().samples, {m.neighbours[0][0] for m in closest})
    pairs = [(images[m.generated], originals.get(m.neighbours[0][0]), f"{m.distance}: {m.neighbours[0][0]}") for m in closest]
    return report, pairs_sheet(pairs)


def run_control(args, pipe, classifier, prompts, bar, device) -> int:
    """Adherence of one ControlNet on held-out scenes, with and without it, side by side."""
    from ldm.formats.model_folder import ModelError
    from ldm.scenes.control_evaluation import (
        Adherence, ControlEvalSettings, control_markdown, control_rows, evaluate_control,
    )  # fmt: skip
    from ldm.scenes.layout_segmenter import DEFAULT_SEGMENTER_PATH, load_segmenter
    from ldm.scenes.report import write_json
    from ldm.scenes.sample_grid import sample_grid
    from ldm.settings import GenerationError

    try:
        segmenter = load_segmenter(args.segmenter or DEFAULT_SEGMENTER_PATH, device) if args.control == "layout" else None
    except ModelError as error:
        return report_error(PROG, str(error))
    settings = ControlEvalSettings(
        control_type=args.control, n_per_prompt=args.n_per_prompt, steps=args.steps, sampler=args.sampler,
        cfg=args.cfg, seed=args.seed, size=args.size, scale=args.control_scale,
    )  # fmt: skip
    try:
        report, cases = evaluate_control(pipe, classifier, Adherence(args.control, segmenter), prompts, settings, bar)
    except (GenerationError, ModelError) as error:
        return report_error(PROG, str(error))
    served = pipe.controlnets.serving(cases[0].unit(args.control, args.control_scale)) if cases else None
    controlnet = args.controlnet or (served.name if served else "?")
    report["model"], report["controlnet"] = args.model or "scenes", str(controlnet)
    markdown = control_markdown(report, report["model"], report["controlnet"])
    write_file_atomic(args.out / "control.md", markdown)
    write_json(report, args.out / "control.json")
    save_png_atomic(sample_grid(control_rows(cases, args.control), columns=6), args.out / "control.png")
    print(markdown)
    print(f"wrote {args.out}/control.md, control.json, control.png", file=sys.stderr)
    return 0


def run_sweep(args, points, pipes, classifier, prompts, bar, device, loras) -> int:
    """Each point evaluated in turn on the same prompts and seeds; one table and one plot."""
    from ldm.scenes.model_evaluation import EvalSettings, evaluate_model
    from ldm.scenes.report import write_json
    from ldm.scenes.sweep import sweep_markdown, sweep_plot, sweep_row

    rows = []
    for point in points:
        cfg = args.cfg if point.cfg is None else point.cfg
        settings = EvalSettings(
            n_per_prompt=args.n_per_prompt, steps=point.steps, sampler=point.sampler, cfg=cfg,
            seed=args.seed, size=args.size, vae_images=0, loras=loras,
        )  # fmt: skip
        print(f"{point.label}:", file=sys.stderr)
        report, _ = evaluate_model(pipes[point.model or args.model], classifier, prompts, settings, progress=bar)
        rows.append(sweep_row(point, point.model or args.model or "default", cfg, report))
    markdown = sweep_markdown(rows, args.n_per_prompt, str(device))
    write_file_atomic(args.out / "sweep.md", markdown)
    write_json({"points": rows, "n_per_prompt": args.n_per_prompt, "device": str(device)}, args.out / "sweep.json")
    save_png_atomic(sweep_plot(rows), args.out / "sweep.png")
    print(markdown)
    print(f"wrote {args.out}/sweep.md, sweep.json, sweep.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
