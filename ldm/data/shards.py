"""WebDataset tar shards as a source, streamed: a brace pattern of local paths, URLs or
`pipe:` commands ("/data/shard-{000000..000099}.tar", "pipe:aws s3 cp s3://b/{0..9}.tar -").

Each epoch the shard list is shuffled with (seed, epoch), split across processes by the
explicit rank/world_size (not torch.distributed, which may not be initialised yet) and
across DataLoader workers (as webdataset's split_by_worker), then samples are shuffled in a
seeded buffer (webdataset's algorithm, run by ldm.data.stream_position so that a resumed run
continues it exactly without reading its consumed shards again). Tar-level failures (an
unreachable URL, a truncated tar) go through a webdataset handler that counts them and
continues; bad images are counted by our decoder.
"""

from __future__ import annotations

import copy
import hashlib
import random
from pathlib import Path
from typing import Iterable, Iterator, Optional

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
from ldm.data.stream_buckets import StreamBuckets, decode_in_bucket
from ldm.data.stream_position import WorkerStream
from ldm.data.transforms import ImageTransform, size_conditioning

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
    """Yields {"pixels": (3, R, R) in [-1, 1], "caption": str, "key": str, "original_size",
    "crop_top_left"} from tar shards (as IndexedImageDataset's samples; with data.buckets the
    pixels are their bucket's (3, H, W), batched one bucket at a time by ldm.data.stream_buckets).

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
        self.buckets: Optional[StreamBuckets] = None  # data.buckets: each picture to its own (ldm.data.stream_buckets)

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

    def current_epoch(self) -> int:
        return self._epoch.get()

    def worker_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        """The shards DataLoader worker `worker` of `workers` reads in `epoch`, in order: the list
        shuffled by (seed, epoch), this rank's share, this worker's share of it (the caching
        view: every shard, in file order)."""
        urls = list(self.urls)
        if self._cache_skip is not None:
            return urls[worker::workers]
        random.Random(mixed_seed(self.seed, epoch)).shuffle(urls)  # as webdataset's SimpleShardList(seed=...)
        return urls[self.rank :: self.world_size][worker::workers]

    def worker_stream(self, epoch: int, worker: int, workers: int, start: Optional[dict] = None) -> WorkerStream:
        """Worker `worker`'s raw samples of `epoch`, from `start` (a WorkerStream.position()) or
        from the beginning; the shuffle buffer's randomness is (seed, epoch, rank, worker)."""
        shuffle = None
        if self._cache_skip is None and self.shuffle_buffer > 1:
            rng = epoch_rng(self.seed, epoch, "shuffle", self.rank, worker)
            shuffle = (self.shuffle_buffer, min(100, self.shuffle_buffer), rng)
        return WorkerStream(self.worker_shards(epoch, worker, workers), self._open_shard, shuffle, start)

    def _open_shard(self, url: str) -> Iterator[dict]:
        """The raw samples of one tar. A tar-level failure (unreachable, truncated) is counted
        once for the shard and ends it; the stream goes on with the next shard."""
        import webdataset as wds

        failed = []

        def on_tar_error(error: Exception) -> bool:
            if not failed:  # one shard may raise more than once
                failed.append(url)
                self.stats.record_skipped_shard()
            return wds.warn_and_continue(error)

        return iter(wds.tarfile_to_samples(handler=on_tar_error)([{"url": url}]))

    def __iter__(self) -> Iterator[dict]:
        epoch = self._epoch.get()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.decoded(self.worker_stream(epoch, worker, workers), epoch)

    def decoded(self, samples: Iterable[dict], epoch: int) -> Iterator[dict]:
        """The readable samples of a raw stream, decoded and transformed (the rest are counted)."""
        for raw in samples:
            sample = self.read_sample(raw, epoch)
            if sample is not None:
                yield sample

    def read_sample(self, raw: dict, epoch: int) -> Optional[dict]:
        """One raw tar sample decoded and transformed, or None (counted, with why)."""
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
        if self.buckets is not None:
            decoded, size = decode_in_bucket(image, self.buckets.buckets)
        else:
            decoded, size = decode_image(image, self.transform.resolution), None
        index = stable_index(key)
        generator = lambda: sample_generator(self.seed, epoch, index, "transform") if self.transform.is_random else None  # noqa: E731
        extra = {}
        if self.control_key:
            decoded, extra = with_control(decoded, raw.get(self.control_key), self.transform, generator, size)
        self.stats.record(decoded.converted, decoded.skipped)
        if decoded.image is None or decoded.skipped:
            return None
        pixels, crop_top_left = self.transform.crop_of(decoded.image, generator(), size)  # (3, R, R) or its bucket's (3, H, W)
        extra.update(size_conditioning(decoded, crop_top_left))
        if self._cache_skip is not None:
            return {"pixels": pixels, "captions": captions, "key": key, **extra}
        return {"pixels": pixels, "caption": self.draw_caption(captions, epoch, key), "key": key, **extra}
