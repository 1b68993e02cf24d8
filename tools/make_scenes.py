"""Write a procedural scenes dataset (see ldm/scenes/generator.py) to disk.

    python tools/make_scenes.py OUT_DIR --n 1000 --size 128 --seed 0 --split train \
        --format folder|webdataset [--shard-size 1000] [--workers 2] [--overwrite] [--control-maps] \
        [--concept windmill]

folder:     OUT_DIR/00000000.png ... + metadata.jsonl (Hugging Face "imagefolder" layout)
webdataset: OUT_DIR/scenes-000000.tar ... holding KEY.png, KEY.txt (caption), KEY.json (attributes)
--control-maps: also OUT_DIR-control/layout/KEY.png (the exact layout map, ldm/scenes/layout.py)
            and OUT_DIR-control/canny/KEY.png (OpenCV edges), the ControlNet stage's
            controlnet.control_dir, named after the samples' keys
--concept:  the scenes also show this object, named in their captions: pictures of a new
            concept to teach the model (stage lora); never in scenes made without it.
            --concept-share S: only that share of them (the rest keep the model's prior)

The dataset is built in a temporary directory next to OUT_DIR and renamed into place at
the end, so OUT_DIR is either absent/untouched or complete.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from ldm.cli.common import OneLineArgumentParser
from ldm.files import clean_leftovers, replacing_folder
from ldm.control.preprocessors import canny
from ldm.scenes.draw import draw_scene_with_layout
from ldm.scenes.generator import CONCEPTS, SPLITS, scene_attributes, scene_caption, scene_seed, shows_concept
from ldm.control.layout_map import layout_image

FORMATS = ("folder", "webdataset")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="make_scenes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=1000, help="number of examples")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 8, >= 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--format", choices=FORMATS, default="folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="examples per webdataset shard")
    parser.add_argument("--workers", type=int, default=1, help="processes drawing images")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument(
        "--control-maps", action="store_true", help="also write each scene's layout and canny maps under OUT_DIR-control/ (beside the scenes, not among them)"
    )
    parser.add_argument("--concept", choices=CONCEPTS, help="an object added to the scenes (and their captions)")
    parser.add_argument("--concept-share", type=float, default=1.0, help="share of scenes showing --concept (default 1: all)")
    args = parser.parse_args(argv)
    if not 0 < args.concept_share <= 1:
        parser.error(f"--concept-share must be in (0, 1], got {args.concept_share}")
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.size < 32 or args.size % 8:
        parser.error(f"--size must be a multiple of 8 and at least 32, got {args.size}")
    if args.shard_size < 1:
        parser.error(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"{args.out_dir} exists and is not a directory")
    for folder in [args.out_dir] + ([control_maps_folder(args.out_dir)] if args.control_maps else []):
        if folder.is_dir() and any(folder.iterdir()) and not args.overwrite:
            parser.error(f"{folder} is not empty (pass --overwrite to replace it)")
    return args


def render_example(job: tuple[int, int, int, str, bool, str | None, float]) -> tuple[str, bytes, str, dict, dict[str, bytes]]:
    """(seed, index, size, split, control_maps, concept, concept share) -> (key, PNG bytes, caption, attributes,
    {control type: map PNG bytes}); runs in worker processes."""
    seed, index, size, split, control_maps, concept, share = job
    example_seed = scene_seed(seed, index)
    attrs = scene_attributes(example_seed, split, concept if concept and shows_concept(seed, index, share) else None)
    image, labels = draw_scene_with_layout(attrs, example_seed, size)
    maps = {"layout": _png(layout_image(labels)), "canny": _png(canny(image))} if control_maps else {}
    return f"{index:08d}", _png(image), scene_caption(example_seed, attrs), attrs.to_dict(), maps


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def control_maps_folder(out: Path) -> Path:
    """OUT_DIR-control: outside OUT_DIR, so the maps are neither listed nor read as training images."""
    return out.with_name(out.name + "-control")


def _write_maps(out: Path, key: str, maps: dict[str, bytes]) -> None:
    for control_type, png in maps.items():
        folder = out / control_type
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.png").write_bytes(png)


def _examples(args: argparse.Namespace) -> Iterator[tuple[str, bytes, str, dict]]:
    jobs = [(args.seed, index, args.size, args.split, args.control_maps, args.concept, args.concept_share) for index in range(args.n)]
    if args.workers == 1:
        yield from map(render_example, jobs)
        return
    with multiprocessing.Pool(args.workers) as pool:
        yield from pool.imap(render_example, jobs, chunksize=16)


def _write_folder(examples, out: Path, maps_out: Path) -> None:
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for key, png, text, attributes, maps in examples:
            (out / f"{key}.png").write_bytes(png)
            _write_maps(maps_out, key, maps)
            record = {"file_name": f"{key}.png", "text": text, "attributes": attributes}
            metadata.write(json.dumps(record) + "\n")


def _write_webdataset(examples, out: Path, maps_out: Path, shard_size: int) -> None:
    import webdataset

    writer = None
    try:
        for count, (key, png, text, attributes, maps) in enumerate(examples):
            _write_maps(maps_out, key, maps)
            if count % shard_size == 0:
                if writer:
                    writer.close()
                # mtime=0 so the same arguments give byte-identical shards.
                writer = webdataset.TarWriter(str(out / f"scenes-{count // shard_size:06d}.tar"), mtime=0)
            writer.write({"__key__": key, "png": png, "txt": text, "json": json.dumps(attributes, sort_keys=True)})
    finally:
        if writer:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    out = args.out_dir.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out.parent, out.name)  # what an earlier killed run left
    # A crash leaves OUT_DIR absent/untouched or complete (ldm.files).
    maps_out = control_maps_folder(out)
    clean_leftovers(maps_out.parent, maps_out.name)
    with replacing_folder(out) as built, replacing_folder(maps_out) if args.control_maps else nullcontext(maps_out) as built_maps:
        examples = tqdm(_examples(args), total=args.n, unit="img", file=sys.stderr, desc="scenes")
        if args.format == "folder":
            _write_folder(examples, built, built_maps)
        else:
            _write_webdataset(examples, built, built_maps, args.shard_size)
    print(f"wrote {args.n} scenes to {out}" + (f", their control maps to {maps_out}" if args.control_maps else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
