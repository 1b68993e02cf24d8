"""WebDataset tar shards as a source, streamed: a brace pattern of local paths, URLs or
`pipe:` commands ("/data/shard-{000000..000099}.tar", "pipe:aws s3 cp s3://b/{0..9}.tar -").

Each epoch the shard list is shuffled with (seed, epoch), split across processes by the
explicit rank/world_size (not torch.distributed, which may not be initialised yet) and
across DataLoader workers (webdataset's split_by_worker), then samples are shuffled in a
seeded buffer. Tar-level failures (an unreachable URL, a truncated tar) go through a
webdataset handler that counts them and continues; bad images are counted by our decoder.
"""

from __future__ import annotations

import copy
import hashlib
from itertools import islice
from pathlib import Path
from typing import Iterator, Optional

import torch

from ldm.data.caption_transforms import CaptionDraw
from ldm.data.captions import member_captions
from ldm.data.config import DataConfig
from ldm.data.control_images import with_control
from ldm.data.decode import decode_image
from ldm.data.errors import DataError
from ldm.data.ordering import SharedEpoch
from ldm.data.randomness import epoch_rng, mixed_seed, sample_generator, stable_index
from ldm.data.stats import DataStats
from ldm.data.transforms import ImageTransform

REMOTE_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://", "sftp://", "ftps://", "scp://", "hf://")


def shard_urls(config: DataConfig, world_size: int) -> list[str]:
    import webdataset as wds

    if not config.path:
        raise DataError("data.path is empty: give the shards as a brace pattern, e.g. /data/shard-{000000..000009}.tar")
    urls = wds.shardlists.expand_urls(config.path)
    local = [url for url in urls if not url.startswith(REMOTE_PREFIXES)]
    missing = [url for url in local if not Path(url.removeprefix("file:")).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more shards)" if len(missing) > 1 else ""
        raise DataError(f"data.path does not exist: {missing[0]}{more}")
    if len(urls) < world_size:
        raise DataError(f"{len(urls)} shards in {config.path} cannot be split across {world_size} processes: make more shards")
    return urls


class WebDatasetShards(torch.utils.data.IterableDataset):
    """Yields {"pixels": (3, R, R) in [-1, 1], "caption": str, "key": str} from tar shards.

    Unlike the random-access sources, `stats` counts every read (a sample read in two
    epochs counts twice), and ranks may get different numbers of samples if the shards
    differ in size: give every rank the same number of equal-sized shards."""

    def __init__(
        self,
        urls: list[str],
        config: DataConfig,
        transform: ImageTransform,
        seed: int,
        rank: int,
        world_size: int,
        description: dict,
        excluded: frozenset[str] = frozenset(),
    ):
        super().__init__()
        self.urls = urls
        self.image_keys = [key.strip().lower() for key in config.image_key.split(";") if key.strip()]
        self.caption_key = config.caption_key.lower()
        self.caption_column = config.caption_column  # in a JSON caption member
        self.control_key = config.control_key.strip().lower()
        self.shuffle_buffer = config.shuffle_buffer
        self.transform = transform
        self.draw_caption = CaptionDraw(config.captions, seed, config.caption_dropout)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.description = description
        self.excluded = excluded  # data.exclude: keys skipped (and counted) as they stream past
        self.stats = DataStats()
        self._epoch = SharedEpoch()
        self._cache_skip: Optional[set[str]] = None

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def describe(self) -> dict:
        digest = hashlib.sha256()
        for url in self.urls:
            local = Path(url.removeprefix("file:"))
            stat = local.stat() if not url.startswith(REMOTE_PREFIXES) else None
            digest.update(f"{url}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
        return {**self.description, "identity": digest.hexdigest(), "transform": self.transform.describe()}

    def caching_view(self, skip_keys: set[str]) -> "WebDatasetShards":
        """Every shard (all ranks'), unshuffled, without `skip_keys`, with the captions as
        a list: {"pixels", "captions", "key"}. Shares `stats`."""
        view = copy.copy(self)
        view._cache_skip = set(skip_keys)
        return view

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        epoch = self._epoch.get()
        caching = self._cache_skip is not None
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rank, world_size = (0, 1) if caching else (self.rank, self.world_size)
        failed: set[str] = set()
        reading = {"url": ""}  # the shard being read: the pipeline reads one shard at a time

        def track(shards: Iterator[dict]) -> Iterator[dict]:
            for shard in shards:
                reading["url"] = shard["url"]
                yield shard

        def on_tar_error(error: Exception) -> bool:
            if reading["url"] not in failed:  # one shard may raise more than once
                failed.add(reading["url"])
                self.stats.record_skipped_shard()
            return wds.warn_and_continue(error)

        stages = [
            wds.SimpleShardList(self.urls, seed=None if caching else mixed_seed(self.seed, epoch)),
            lambda shards: islice(shards, rank, None, world_size),
            wds.split_by_worker,
            track,
            wds.tarfile_to_samples(handler=on_tar_error),
        ]
        if not caching and self.shuffle_buffer > 1:
            rng = epoch_rng(self.seed, epoch, "shuffle", rank, worker)
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng))
        stages.append(lambda samples: self._decode(samples, epoch))
        return iter(wds.DataPipeline(*stages))

    def _decode(self, samples: Iterator[dict], epoch: int) -> Iterator[dict]:
        for raw in samples:
            sample = self._read(raw, epoch)
            if sample is not None:
                yield sample

    def _read(self, raw: dict, epoch: int) -> Optional[dict]:
        key = raw["__key__"]
        if self._cache_skip is not None and key in self._cache_skip:
            return None
        if key in self.excluded:
            self.stats.record(skipped="excluded")
            return None
        captions = member_captions(raw.get(self.caption_key, b""), self.caption_key, self.caption_column)
        if not captions:
            self.stats.record(skipped="no caption")
            return None
        image = next((raw[k] for k in self.image_keys if k in raw), None)
        if image is None:
            self.stats.record(skipped="unreadable")
            return None
        decoded = decode_image(image, self.transform.resolution)
        index = stable_index(key)
        generator = lambda: sample_generator(self.seed, epoch, index, "transform") if self.transform.is_random else None  # noqa: E731
        extra = {}
        if self.control_key:
            decoded, extra = with_control(decoded, raw.get(self.control_key), self.transform, generator)
        self.stats.record(decoded.converted, decoded.skipped)
        if decoded.image is None or decoded.skipped:
            return None
        pixels = self.transform(decoded.image, generator())  # (3, R, R)
        if self._cache_skip is not None:
            return {"pixels": pixels, "captions": captions, "key": key, **extra}
        return {"pixels": pixels, "caption": self.draw_caption(captions, epoch, key), "key": key, **extra}
