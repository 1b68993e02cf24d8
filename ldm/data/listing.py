"""Every sample of a source as (key, undecoded image), for tools that look at a whole source
at once (`ldm-data dedupe`). Keys are the ones the training sources give their samples, so
a list of them is a `data.exclude` list. Captions are not needed, so images without one are
listed too; the validation split is not made (a copy across the split is a leak too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ldm.data.config import DataConfig
from ldm.data.decode import ImageSource
from ldm.data.errors import DataError
from ldm.data.hf_datasets import load_hf
from ldm.data.imagefolder import folder_files
from ldm.data.shards import shard_urls


@dataclass
class Listing:
    samples: Iterator[tuple[str, ImageSource]]
    count: Optional[int]  # None for a stream (not known before it is read)
    description: str  # 'imagefolder photos/ (1200 images)'


def list_folder(path: str, setting: str = "data.path") -> Listing:
    """The images of a folder as ldm-train's imagefolder source finds them; keys are their
    POSIX paths relative to `path`."""
    files, _ = folder_files(path, setting)
    root = Path(path)
    return Listing(((name, root / name) for name in files), len(files), f"imagefolder {path} ({len(files)} images)")


def list_samples(config: DataConfig) -> Listing:
    """The samples of `config`'s source (imagefolder, hf or webdataset)."""
    if config.source == "imagefolder":
        return list_folder(config.path)
    if config.source == "hf":
        records = load_hf(config)
        samples = ((records.key(i), records.read(i)[0]) for i in range(len(records)))
        return Listing(samples, len(records), f"hf {config.path} ({len(records)} rows)")
    if config.source == "webdataset":
        urls = shard_urls(config, world_size=1)
        return Listing(_shard_samples(urls, config.image_key), None, f"webdataset {config.path} ({len(urls)} shards)")
    raise DataError(f"unknown data.source {config.source!r}; expected one of imagefolder, hf, webdataset")


def _shard_samples(urls: list[str], image_key: str) -> Iterator[tuple[str, ImageSource]]:
    """(__key__, image bytes) of every sample in the shards, in order; a shard that cannot be
    read is warned about and passed over (as training does); a sample without an image gives b""."""
    import webdataset as wds

    keys = [key.strip().lower() for key in image_key.split(";") if key.strip()]
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=wds.warn_and_continue))
    for raw in pipeline:
        yield raw["__key__"], next((raw[k] for k in keys if k in raw), b"")
