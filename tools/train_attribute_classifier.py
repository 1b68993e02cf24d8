"""Train the scene attribute classifier that judges generated images (see ldm/scenes/).

    python tools/train_attribute_classifier.py OUT.safetensors --n 6000 --steps 2000 --size 128 \
        [--val-n 1000] [--batch-size 64] [--lr 3e-3] [--seed 0] [--workers 2] [--threads 1] [--fp16]

It learns from real scenes only (never from model outputs), drawn from dataset seeds kept
for it (ldm/scenes/seeds.py), and reports its accuracy per attribute on fresh scenes,
clean and augmented; both go into the file's metadata. On 2 CPU cores the defaults took
8.4 minutes (on a busy machine: 4.8 min drawing 7000 scenes, 3.5 min for 2000 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ldm.cli.common import OneLineArgumentParser


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="train_attribute_classifier.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the .safetensors file")
    parser.add_argument("--n", type=int, default=6000, help="training scenes (default 6000)")
    parser.add_argument("--val-n", type=int, default=1000, help="fresh scenes for the accuracy report (default 1000)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--size", type=int, default=128, help="scenes are drawn at this size, then resized to the input size")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing scenes")
    # Convolutions this small gain little from more threads, and lose a lot on shared cores.
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--fp16", action="store_true", help="store weights in float16 (half the file)")
    parser.add_argument("--concept", choices=("windmill",), help="add a head for this concept (a judge for a taught LoRA)")
    parser.add_argument("--concept-share", type=float, default=0.3, help="share of scenes showing the concept (default 0.3)")
    args = parser.parse_args(argv)
    if not 0 < args.concept_share < 1:
        parser.error(f"--concept-share must be between 0 and 1, got {args.concept_share}")
    for name in ("n", "val_n", "steps", "batch_size", "workers", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.size < 16:
        parser.error(f"--size must be at least 16, got {args.size}")
    if args.out.suffix != ".safetensors":
        parser.error(f"{args.out} should end in .safetensors")
    return args


def accuracy_table(clean: dict[str, float], augmented: dict[str, float]) -> str:
    lines = ["| attribute | fresh scenes | augmented |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {100 * clean[name]:.1f}% | {100 * augmented[name]:.1f}% |" for name in clean]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    import torch

    from ldm.scenes import seeds
    from ldm.scenes.attribute_classifier import CONCEPT_HEADS, HEADS, AttributeClassifier, ClassifierConfig, save_classifier
    from ldm.scenes.classifier_training import (
        accuracy_per_head,
        count_parameters,
        render_scenes,
        train_classifier,
    )

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)  # the initial weights; everything after uses `generator`
    generator = torch.Generator().manual_seed(args.seed)
    heads = {**HEADS, args.concept: CONCEPT_HEADS[args.concept]} if args.concept else HEADS
    model = AttributeClassifier(ClassifierConfig(heads=heads))
    concept = dict(concept=args.concept, concept_share=args.concept_share)

    def bar(desc, total):
        return lambda iterable: tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr)

    images, labels = render_scenes(
        model, args.n, seeds.CLASSIFIER_TRAIN, args.size, args.workers, bar("train scenes", args.n), **concept
    )
    val_images, val_labels = render_scenes(
        model, args.val_n, seeds.CLASSIFIER_VALIDATION, args.size, args.workers, bar("fresh scenes", args.val_n), **concept
    )
    steps_bar = lambda steps: tqdm(steps, total=args.steps, desc="training", unit="step", file=sys.stderr)  # noqa: E731
    losses = train_classifier(
        model, images, labels, args.steps, generator, args.batch_size, args.lr, progress=steps_bar
    )
    clean = accuracy_per_head(model, val_images, val_labels)
    augmented = accuracy_per_head(model, val_images, val_labels, torch.Generator().manual_seed(args.seed + 1))
    record = {
        "trained_on": f"{args.n} real scenes, split 'all', dataset seed {seeds.CLASSIFIER_TRAIN}, drawn at {args.size} px"
        + (f", {args.concept_share:.0%} of them with a {args.concept}" if args.concept else ""),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "validation": f"{args.val_n} fresh scenes, dataset seed {seeds.CLASSIFIER_VALIDATION}",
        "accuracy": clean,
        "accuracy_augmented": augmented,
        "parameters": count_parameters(model),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    if args.fp16:
        model = model.half()
    save_classifier(model, args.out, record)
    print(accuracy_table(clean, augmented))
    print(json.dumps({k: v for k, v in record.items() if "accuracy" not in k}, indent=1), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
