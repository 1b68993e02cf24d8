"""Plant near-copies of one image (with its caption) in an image folder: the duplicated
picture a web collection has, for the memorization experiment (docs/memorization.md).

    python tools/plant_duplicates.py FOLDER IMAGE --copies 299 [--seed 0]

FOLDER is an imagefolder with a metadata.jsonl (tools/make_scenes.py writes one); IMAGE its
file name there. The copies are the kinds `ldm-data dedupe` is measured to find at its default
threshold (docs/data.md): the exact bytes, resized 0.5x and 2x, JPEG at quality 30/60/90,
cropped by 2%, brightness +-5/10%, in turn. They are written as FOLDER/copy-NNNN-IMAGE.jpg|png,
each with IMAGE's metadata line (caption, attributes), appended to metadata.jsonl last.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path, PurePosixPath

from dedupe_benchmark import copies  # the benchmark's copy kinds: one definition of each
from ldm.cli.common import OneLineArgumentParser, fail
from ldm.files import write_file_atomic

PROG = "plant_duplicates.py"
FOUND_KINDS = (  # recall 1.00 at dedupe's default threshold (docs/data.md); mirrors and larger crops are not
    "exact", "resized 0.5x", "resized 2x", "JPEG q30", "JPEG q60", "JPEG q90", "cropped 2%",
    "brightness -10%", "brightness -5%", "brightness +5%", "brightness +10%",
)  # fmt: skip


def metadata_lines(folder: Path) -> list[dict]:
    path = folder / "metadata.jsonl"
    if not path.is_file():
        fail(PROG, f"{folder} has no metadata.jsonl (tools/make_scenes.py writes one)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plant(folder: Path, image: str, count: int, seed: int) -> list[dict]:
    """Writes `count` copies of `image`; returns their metadata lines."""
    lines = metadata_lines(folder)
    original = next((line for line in lines if line.get("file_name") == image), None)
    if original is None or not (folder / image).is_file():
        fail(PROG, f"{image} is not an image listed in {folder / 'metadata.jsonl'}")
    data = (folder / image).read_bytes()
    rng = random.Random(seed)
    planted = []
    for n in range(count):
        kind = FOUND_KINDS[n % len(FOUND_KINDS)]
        suffix = PurePosixPath(image).suffix if kind == "exact" else ".jpg"
        name = f"copy-{n:04d}-{PurePosixPath(image).stem}{suffix}"
        write_file_atomic(folder / name, copies(data, rng)[kind])
        planted.append({**original, "file_name": name})
    write_file_atomic(folder / "metadata.jsonl", "".join(json.dumps(line) + "\n" for line in lines + planted))
    return planted


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an imagefolder with metadata.jsonl")
    parser.add_argument("image", help="the file name (in metadata.jsonl) of the image to copy")
    parser.add_argument("--copies", type=int, default=299, help="copies to plant (default 299: 300 in all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random crops")
    args = parser.parse_args(argv)
    if args.copies < 1:
        parser.error(f"--copies must be at least 1, got {args.copies}")
    planted = plant(args.folder, args.image, args.copies, args.seed)
    print(f"planted {len(planted)} copies of {args.image} in {args.folder} ({len(FOUND_KINDS)} kinds in turn)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
