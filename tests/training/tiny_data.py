"""A tiny in-memory stand-in for ldm.data's datasets (same sample contract), so the
training tests run without image files: {"pixels": (3, R, R) in [-1, 1], "caption", "key"}."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ldm.data.indexed import Item, split_item

COLOURS = ["red", "green", "blue", "yellow"]


class TinyImages(Dataset):
    """Smooth two-tone images whose colours the caption names: easy to overfit."""

    def __init__(self, n: int = 8, resolution: int = 32, offset: int = 0):
        self.n, self.resolution, self.offset = n, resolution, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: Item) -> dict:
        index = split_item(item)[1] + self.offset
        g = torch.Generator().manual_seed(index)
        r = self.resolution
        top, bottom = torch.rand(3, 1, 1, generator=g) * 2 - 1, torch.rand(3, 1, 1, generator=g) * 2 - 1
        ramp = torch.linspace(0, 1, r).view(1, r, 1)
        pixels = (top * (1 - ramp) + bottom * ramp).expand(3, r, r).clone()
        caption = f"{COLOURS[index % 4]} over {COLOURS[(index // 4) % 4]}"
        return {"pixels": pixels, "caption": caption, "key": f"{index:05d}"}


def tiny_datasets(n: int = 8, resolution: int = 32, validation: int = 4):
    def open_dataset(split: str):
        if split == "validation":
            return TinyImages(validation, resolution, offset=1000)
        return TinyImages(n, resolution)

    return open_dataset


def tiny_image_folder(folder: Path, n: int = 8, resolution: int = 32) -> Path:
    """TinyImages written as PNGs with sidecar captions: what ldm-train reads from disk."""
    from ldm.images import to_pil

    folder.mkdir(parents=True, exist_ok=True)
    images = TinyImages(n, resolution)
    for i in range(n):
        sample = images[i]
        to_pil(sample["pixels"][None])[0].save(folder / f"{sample['key']}.png")
        (folder / f"{sample['key']}.txt").write_text(sample["caption"])
    return folder


def tiny_shards(folder: Path, shards: int = 4, per_shard: int = 2, resolution: int = 32) -> str:
    """TinyImages as webdataset tar shards of `per_shard` PNGs with captions; the brace pattern."""
    import webdataset as wds

    from ldm.images import to_pil

    folder.mkdir(parents=True, exist_ok=True)
    images = TinyImages(shards * per_shard, resolution)
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"shard-{shard:03d}.tar")) as writer:
            for i in range(shard * per_shard, (shard + 1) * per_shard):
                sample = images[i]
                encoded = io.BytesIO()
                to_pil(sample["pixels"][None])[0].save(encoded, format="PNG")
                writer.write({"__key__": sample["key"], "png": encoded.getvalue(), "txt": sample["caption"]})
    return str(folder / f"shard-{{000..{shards - 1:03d}}}.tar")
