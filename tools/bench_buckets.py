"""Aspect-ratio buckets against square crops on the same photos: how much of each picture
is cropped away, what reading the image headers costs, and text2img training throughput.

    python tools/bench_buckets.py [--images ../shared/data/coco-mini/train2017]
        [--captions ../shared/data/coco-mini/annotations/captions_train2017.json]
        [--config configs/cpu/text2img.yaml] [--resolution 64] [--steps 12] [--batch-size 4]

Both variants train the same model from the same seed, encoding the images every step (no
latent cache: the decode, resize and crop are part of what is measured). images/s is the
median of the logged steps after the first two. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the project (a worktree sits one folder deeper)
COCO = next((p / "shared" / "data" / "coco-mini" for p in REPO.parents[:2] if (p / "shared" / "data").is_dir()), REPO.parent / "shared" / "data" / "coco-mini")


def square_cropped_share(sizes: list[tuple[int, int]], resolution: int) -> float:
    """The share of the resized pictures' pixels a centre square crop throws away (pictures
    whose shorter side is below the resolution are skipped by the square path, as here)."""
    kept = lost = 0.0
    for width, height in sizes:
        if min(width, height) < resolution:
            continue
        scale = resolution / min(width, height)
        kept += resolution * resolution
        lost += width * height * scale * scale - resolution * resolution
    return lost / (kept + lost)


def bench_config(args, output_dir: Path, buckets: bool):
    from ldm.training.config import load_train_config

    config = load_train_config(args.config, [
        f"data.path={args.images}", f"data.coco_captions={args.captions}", f"data.resolution={args.resolution}",
        f"data.buckets={'true' if buckets else 'false'}", "data.crop=center", "data.random_flip=false", "data.num_workers=0",
        f"train.output_dir={output_dir}", f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
        "train.save_every=100000", "train.log_every=1", "train.progress=false", "train.ema_decay=null",
        "validation.prompts=[]", "text2img.vae_from=null", "text2img.text_encoder_from=null", "text2img.latent_cache=false",
    ])  # fmt: skip
    if config.model.vae.scaling_factor is None:
        config.model.vae.scaling_factor = 0.18215
    return config


def images_per_second(output_dir: Path) -> float:
    import json

    rows = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    rates = [row["images_per_s"] for row in rows if "images_per_s" in row][2:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(COCO / "train2017"))
    parser.add_argument("--captions", default=str(COCO / "annotations" / "captions_train2017.json"))
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu" / "text2img.yaml"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from ldm.data import build_dataset
    from ldm.training.loop import train

    with tempfile.TemporaryDirectory() as work:
        config = bench_config(args, Path(work) / "plan", buckets=True)
        started = time.perf_counter()
        dataset = build_dataset(config.data)
        planned = time.perf_counter() - started
        plan = dataset.buckets
        sizes = [size for size in plan.original if size is not None]
        print(f"{len(sizes)} photos; bucket plan (headers only) in {planned:.2f} s ({1000 * planned / len(sizes):.2f} ms per photo)")
        print(plan.histogram_line())
        rates = {}
        for name, buckets in (("square crops", False), ("buckets", True)):
            output_dir = Path(work) / name.replace(" ", "-")
            train(bench_config(args, output_dir, buckets))
            rates[name] = images_per_second(output_dir)
    pixels = statistics.mean(w * h for w, h in (plan.size_of(p) for p in range(len(plan.of)) if plan.of[p] >= 0))
    print(f"\n| {args.resolution} px, batch {args.batch_size} | images/s | pixels per image | cropped away |")
    print("|---|---|---|---|")
    print(f"| square crops | {rates['square crops']:.2f} | {args.resolution ** 2} | {square_cropped_share(sizes, args.resolution):.1%} |")
    print(f"| buckets | {rates['buckets']:.2f} | {pixels:.0f} | {plan.cropped_share():.1%} |")


if __name__ == "__main__":
    main()
