"""DataConfig -> dataset: checks the settings, then builds the configured source."""

from __future__ import annotations

from typing import Callable, Optional, Union

from ldm.data.buckets import resolve_buckets
from ldm.data.caption_transforms import check_caption_settings
from ldm.data.config import DataConfig
from ldm.data.errors import DataError
from ldm.data.exclude import Exclusion, exclude_keys, read_exclusion_list
from ldm.data.hf_datasets import load_hf
from ldm.data.imagefolder import load_image_folder
from ldm.data.indexed import IndexedImageDataset, Records
from ldm.data.ordering import validation_split
from ldm.data.shards import WebDatasetShards, shard_urls
from ldm.data.stream_buckets import StreamBuckets
from ldm.data.transforms import CROPS, ImageTransform

SPLITS = ("train", "validation")
Dataset = Union[IndexedImageDataset, WebDatasetShards]


def build_dataset(config: DataConfig, seed: int = 0, rank: int = 0, world_size: int = 1, split: str = "train") -> Dataset:
    """The samples for `split`, {"pixels": (3, R, R) in [-1, 1], "caption": str, "key": str,
    "original_size", "crop_top_left"} (data.buckets: (3, H, W) of the sample's bucket, and a
    `.buckets` plan that make_batches batches by; a stream's `.buckets` is the bucket list, its
    workers batch by bucket as the pictures arrive), with `.stats`: a map-style dataset (imagefolder, hf) that ldm.data.make_batches splits
    across processes, or a stream (webdataset) already split for process `rank` of
    `world_size`. Do not also shard its loader (e.g. with accelerator.prepare). Raises DataError before any image is decoded for a missing path,
    no images, unreadable captions or metadata, or an unknown source or setting."""
    _check(config, rank, world_size, split)
    training = split == "train"
    # The validation measures the model: same pixels every time, no augmentation.
    transform = ImageTransform(config.resolution, config.crop if training else "center", config.random_flip and training)
    try:
        build = SOURCES[config.source]
    except KeyError:
        raise DataError(f"unknown data.source {config.source!r}; expected one of {', '.join(SOURCES)}") from None
    return build(config, transform, seed, rank, world_size, split)


def _check(config: DataConfig, rank: int, world_size: int, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split is {split!r}; expected one of {', '.join(SPLITS)}")
    if config.crop not in CROPS:
        raise DataError(f"data.crop is {config.crop!r}; expected one of {', '.join(CROPS)}")
    if config.resolution < 1:
        raise DataError(f"data.resolution must be positive, got {config.resolution}")
    if not 0.0 <= config.caption_dropout <= 1.0:
        raise DataError(f"data.caption_dropout must be in [0, 1], got {config.caption_dropout}")
    try:
        check_caption_settings(config.captions)
    except ValueError as error:
        raise DataError(str(error)) from None
    resolve_buckets(config.buckets, config.resolution)  # a setting with no bucket: before any header is read
    if config.validation < 0:
        raise DataError(f"data.validation must not be negative, got {config.validation}")
    for setting, source in (("control_column", "hf"), ("control_key", "webdataset")):
        if getattr(config, setting) and config.source != source:
            raise DataError(f"data.{setting} is read from data.source {source}, not {config.source}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")


def _indexed(load: Callable[[DataConfig], Records]):
    def build(config: DataConfig, transform: ImageTransform, seed: int, rank: int, world_size: int, split: str):
        records = load(config)
        train, validation, exclusion = _split(config, [records.key(i) for i in range(len(records))])
        description = {
            "source": config.source,
            "split": split,
            "validation": len(validation),  # held out: data.validation, fewer in a small dataset
            "columns": [config.image_column, config.caption_column, *filter(None, [config.control_column])],
        }
        if exclusion is not None:
            description["exclude"] = exclusion.digest
        indices = train if split == "train" else validation
        # Every process gets every sample: the sampler picks each one's share (ldm.data.batches).
        dataset = IndexedImageDataset(records, indices, transform, config.caption_dropout, seed, split == "train", description, config.captions)
        if exclusion is not None:
            dataset.exclusion = exclusion
            if rank == 0:  # counted once: the processes' counts are summed
                dataset.stats.record_excluded(exclusion.excluded)
        buckets = resolve_buckets(config.buckets, config.resolution)
        if buckets is not None and split == "train":  # validation measures on the same squares every time
            description["buckets"] = buckets.describe()
            dataset.use_buckets(buckets, count_skips=rank == 0)
        return dataset

    return build


def _split(config: DataConfig, keys: list[str]) -> tuple[list[int], list[int], Optional[Exclusion]]:
    """(train indices, validation indices, what data.exclude did): the samples the list names
    are in neither split. Without a list: validation_split's, exactly as ever."""
    if not config.exclude:
        return (*validation_split(keys, config.validation), None)
    exclusion = exclude_keys(read_exclusion_list(config.exclude), keys)
    train, validation = validation_split([keys[i] for i in exclusion.kept], config.validation)
    return [exclusion.kept[i] for i in train], [exclusion.kept[i] for i in validation], exclusion  # positions -> indices


def _webdataset(config: DataConfig, transform: ImageTransform, seed: int, rank: int, world_size: int, split: str):
    if config.validation or split != "train":
        raise DataError(
            "data.validation is not supported for webdataset (a stream has no 'last N'): "
            "write the validation samples to their own shards and read them with a second config"
        )
    urls = shard_urls(config, world_size)
    keys = [config.image_key, config.caption_key, *filter(None, [config.control_key])]
    description = {"source": config.source, "split": split, "keys": keys}
    # A stream cannot tell up front which names match nothing: each excluded read is counted.
    excluded: frozenset[str] = frozenset()
    if config.exclude:
        listed = read_exclusion_list(config.exclude)
        description["exclude"], excluded = listed.digest(), listed.names
    buckets = resolve_buckets(config.buckets, config.resolution)
    if buckets is not None:
        description["buckets"] = buckets.describe()
    dataset = WebDatasetShards(urls, config, transform, seed, rank, world_size, description, excluded)
    if buckets is not None:  # each worker buffers its pictures by bucket (ldm.data.stream_buckets)
        dataset.buckets = StreamBuckets(buckets)
    return dataset


SOURCES = {
    "imagefolder": _indexed(load_image_folder),
    "hf": _indexed(load_hf),
    "webdataset": _webdataset,
}
