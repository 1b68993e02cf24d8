"""Folders and datasets of pictures in five aspect ratios (and one too small for any bucket at
data.resolution 32), for the aspect-ratio bucket tests."""

from __future__ import annotations

import io
from pathlib import Path

from photo_like import picture

# (width, height) -> the bucket it gets at data.resolution 32 (step 8, sides 16..64, area 32*32)
RATIOS = {(64, 64): (32, 32), (96, 64): (40, 24), (64, 96): (24, 40), (128, 40): (48, 16), (40, 128): (16, 48)}
TOO_SMALL = (12, 12)


def aspect_samples(per_ratio: int = 2, too_small: bool = True) -> list[tuple[str, bytes, str]]:
    """(name, PNG bytes, caption) of `per_ratio` pictures per ratio, then the small one."""
    sizes = [size for size in RATIOS for _ in range(per_ratio)] + ([TOO_SMALL] if too_small else [])
    samples = []
    for n, size in enumerate(sizes):
        buffer = io.BytesIO()
        picture(n, size).save(buffer, "PNG")
        samples.append((f"{n:03d}-{size[0]}x{size[1]}", buffer.getvalue(), f"picture {n} of {size[0]} by {size[1]}"))
    return samples


def aspect_folder(folder: Path, per_ratio: int = 2, too_small: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, caption in aspect_samples(per_ratio, too_small):
        (folder / f"{name}.png").write_bytes(data)
        (folder / f"{name}.txt").write_text(caption)
    return folder


def aspect_hf_dataset(folder: Path, per_ratio: int = 2) -> Path:
    """The same pictures as a saved `datasets` dataset with an Image feature."""
    import datasets

    samples = aspect_samples(per_ratio)
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": [{"bytes": data, "path": None} for _, data, _ in samples], "text": [caption for _, _, caption in samples]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    return folder


def aspect_shards(folder: Path, shards: int = 3, per_ratio: int = 2, too_small: bool = True) -> str:
    """The same pictures (key: the name without ".png") dealt in turn into `shards` tar shards;
    returns their brace pattern."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    samples = aspect_samples(per_ratio, too_small)
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"shard-{shard:02d}.tar")) as writer:
            for name, data, caption in samples[shard::shards]:
                writer.write({"__key__": name, "png": data, "txt": caption})
    return str(folder / f"shard-{{00..{shards - 1:02d}}}.tar")
