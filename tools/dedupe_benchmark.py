"""How well `ldm-data dedupe` finds planted copies among real photos, and how often it pairs
distinct ones: precision and recall per kind of copy, at several thresholds; time per 1000
images. The figures in docs/data.md come from:

    python tools/dedupe_benchmark.py ../shared/data --copies 300

Every image found under DATA is a distinct photo (the benchmark's negatives; a real
duplicate among them shows up as a false pair, so the false pairs are listed for a look).
`--copies` of them are drawn at random and a copy of each kind is made in memory (nothing
is written next to the photos): exact bytes, resized 0.5x and 2x, JPEG at quality 30/60/90,
cropped by 2/5/10% (split at random between the opposite edges), brightness +-5/10%, and
mirrored. A copy is found when it ends in the group of its original.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from ldm.data.dedupe import DEFAULT_THRESHOLD, fingerprint, group_duplicates
from ldm.data.imagefolder import folder_files

THRESHOLDS = (8, 14, 18, 22, 26, 30)


def encode(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def crop(image: Image.Image, share: float, rng: random.Random) -> Image.Image:
    """`share` of the width and of the height cut off, split at random between opposite edges."""
    width, height = image.size
    left, top = rng.uniform(0, share), rng.uniform(0, share)
    box = (left * width, top * height, width - (share - left) * width, height - (share - top) * height)
    return image.crop(tuple(round(v) for v in box))


def copies(data: bytes, rng: random.Random) -> dict[str, bytes]:
    """kind -> the copy's file bytes."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    made = {
        "exact": data,
        "resized 0.5x": encode(image.resize((width // 2, height // 2), Image.LANCZOS)),
        "resized 2x": encode(image.resize((width * 2, height * 2), Image.BICUBIC)),
        "mirrored": encode(ImageOps.mirror(image)),
    }
    for quality in (30, 60, 90):
        made[f"JPEG q{quality}"] = encode(image, quality)
    for share in (0.02, 0.05, 0.10):
        made[f"cropped {share:.0%}"] = encode(crop(image, share, rng))
    for change in (-0.10, -0.05, 0.05, 0.10):
        made[f"brightness {change:+.0%}"] = encode(ImageEnhance.Brightness(image).enhance(1 + change))
    return made


def timed_fingerprints(items: list[tuple[str, bytes]], flips: bool) -> tuple[list, float]:
    started = time.perf_counter()
    prints = [fingerprint(key, data, flips) for key, data in items]
    return prints, time.perf_counter() - started


def evaluate(prints, origin: dict[str, str], threshold: int, flips: bool) -> dict:
    """Recall per kind of copy; precision and the false pairs (kept, other) over all groups."""
    started = time.perf_counter()
    groups = group_duplicates(prints, threshold, flips)
    seconds = time.perf_counter() - started
    group_of = {}
    for n, group in enumerate(groups):
        for key in [group.kept, *(d.key for d in group.duplicates)]:
            group_of[key] = n
    found: dict[str, list[bool]] = {}
    for key, original in origin.items():
        if key != original:
            kind = key.split("|")[1]
            found.setdefault(kind, []).append(key in group_of and group_of[key] == group_of.get(original))
    false_pairs = [(g.kept, d.key, d.distance) for g in groups for d in g.duplicates if origin[g.kept] != origin[d.key]]
    reported = sum(len(g.duplicates) for g in groups)
    return {"recall": {kind: sum(hits) / len(hits) for kind, hits in found.items()}, "reported": reported,
            "false_pairs": false_pairs, "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a folder of real photos (searched recursively)")
    parser.add_argument("--copies", type=int, default=300, help="originals to plant copies of")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.data)
    files, _ = folder_files(args.data)
    rng = random.Random(args.seed)
    photos = [(name, (root / name).read_bytes()) for name in files]
    planted = rng.sample(photos, args.copies)
    items = list(photos)
    origin = {name: name for name, _ in photos}
    for name, data in planted:
        for kind, copy in copies(data, rng).items():
            items.append((f"copy|{kind}|{name}", copy))
            origin[f"copy|{kind}|{name}"] = name
    for flips in (False, True):
        prints, seconds = timed_fingerprints(items, flips)
        print(f"\n## flips={flips}: {len(photos)} photos + {len(items) - len(photos)} copies; "
              f"hashing {1000 * seconds / len(items):.2f} s per 1000 images")  # fmt: skip
        results = {t: evaluate(prints, origin, t, flips) for t in sorted({*THRESHOLDS, DEFAULT_THRESHOLD})}
        kinds = list(next(iter(results.values()))["recall"])
        print("| threshold | " + " | ".join(kinds) + f" | recall (all kinds{'' if flips else ' but mirrored'}) | precision | false pairs | grouping s |")
        print("|---" * (len(kinds) + 5) + "|")
        for threshold, result in results.items():
            recall = result["recall"]
            counted = [k for k in kinds if k != "mirrored" or flips]
            overall = sum(recall[k] for k in counted) / len(counted)
            precision = 1 - len(result["false_pairs"]) / max(1, result["reported"])
            cells = " | ".join(f"{recall[k]:.2f}" for k in kinds)
            print(f"| {threshold} | {cells} | {overall:.3f} | {precision:.4f} | {len(result['false_pairs'])} | {result['seconds']:.2f} |")
        for kept, other, distance in results[DEFAULT_THRESHOLD]["false_pairs"][:20]:
            print(f"false pair at {DEFAULT_THRESHOLD}: {kept} ~ {other} (distance {distance})")


if __name__ == "__main__":
    main()
