"""Train the layout segmenter that judges how closely generated images follow a layout map.

    python tools/train_layout_segmenter.py OUT.safetensors --n 3000 --steps 1500 \
        [--val-n 300] [--batch-size 32] [--lr 3e-3] [--seed 0] [--threads 2] [--fp16]

It learns from real scenes only (never from model outputs), drawn with their exact region maps
from dataset seeds kept for it (ldm/scenes/seeds.py), and reports its mean IoU on fresh
scenes, clean and augmented; both go into the file's metadata.
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
    parser = OneLineArgumentParser(prog="train_layout_segmenter.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the .safetensors file")
    parser.add_argument("--n", type=int, default=3000, help="training scenes (default 3000)")
    parser.add_argument("--val-n", type=int, default=300, help="fresh scenes for the score (default 300)")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per step (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--size", type=int, default=128, help="scene size in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--fp16", action="store_true", help="store weights in float16 (half the file)")
    args = parser.parse_args(argv)
    for name in ("n", "val_n", "steps", "batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.size < 16:
        parser.error(f"--size must be at least 16, got {args.size}")
    if args.out.suffix != ".safetensors":
        parser.error(f"{args.out} should end in .safetensors")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    import torch

    from ldm.scenes import seeds
    from ldm.scenes.layout_segmenter import LayoutSegmenter, save_segmenter
    from ldm.scenes.segmenter_training import render_layouts, segmenter_miou, train_segmenter

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)  # the initial weights; everything after uses `generator`
    generator = torch.Generator().manual_seed(args.seed)
    model = LayoutSegmenter()

    def bar(desc, total, unit="img"):
        return lambda iterable: tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)

    images, labels = render_layouts(args.n, seeds.SEGMENTER_TRAIN, args.size, bar("train scenes", args.n))
    val_images, val_labels = render_layouts(args.val_n, seeds.SEGMENTER_VALIDATION, args.size, bar("fresh scenes", args.val_n))
    losses = train_segmenter(
        model, images, labels, args.steps, generator, args.batch_size, args.lr, progress=bar("training", args.steps, "step")
    )
    record = {
        "trained_on": f"{args.n} real scenes, split 'all', dataset seed {seeds.SEGMENTER_TRAIN}, drawn at {args.size} px",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "validation": f"{args.val_n} fresh scenes, dataset seed {seeds.SEGMENTER_VALIDATION}",
        "miou": segmenter_miou(model, val_images, val_labels),
        "miou_augmented": segmenter_miou(model, val_images, val_labels, torch.Generator().manual_seed(args.seed + 1)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    save_segmenter(model.half() if args.fp16 else model, args.out, record)
    print(f"mean IoU on fresh scenes: {record['miou']:.3f} (augmented {record['miou_augmented']:.3f})")
    print(json.dumps({k: v for k, v in record.items() if "miou" not in k}, indent=1), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
