"""Aspect-ratio buckets for webdataset streams (ldm.data.stream_buckets): pictures of five aspect
ratios in small tar shards come out in batches of one bucket, with the pixels, original size and
crop the image folder source gives; every readable sample once an epoch; a resume after any
batch (a partly filled bucket buffer included) gives the same batches as a run never stopped;
two processes and two workers each keep their own buffers; the latent cache keeps each shape."""

import json

import pytest
import torch
import torch.nn.functional as F

from aspect_pictures import RATIOS, aspect_folder, aspect_shards

from ldm.data import build_dataset, make_batches, stream_buckets
from ldm.data.latent_cache import CachedLatentDataset, LatentCache, build_latent_cache, cache_key

from .fixtures import folder_config

PER_RATIO = 3  # with batch 2: a full batch and one waiting sample per bucket
READABLE = {f"{n:03d}-{w}x{h}" for n, (w, h) in enumerate(size for size in RATIOS for _ in range(PER_RATIO))}


@pytest.fixture
def pattern(tmp_path):
    return aspect_shards(tmp_path / "shards", shards=4, per_ratio=PER_RATIO)


def stream_config(pattern, **settings):
    return folder_config(pattern, source="webdataset", resolution=32, buckets=True, **{"shuffle_buffer": 4, **settings})


def keys(batches) -> list[list[str]]:
    return [list(batch["key"]) for batch in batches]


def test_every_batch_is_one_bucket_with_the_folders_pixels_size_and_crop(tmp_path, pattern):
    dataset = build_dataset(stream_config(pattern, shuffle_buffer=0))
    folder = build_dataset(folder_config(aspect_folder(tmp_path / "folder", per_ratio=PER_RATIO), resolution=32, buckets=True))
    expected = {sample["key"].removesuffix(".png"): sample for sample in folder}
    seen = []
    for batch in make_batches(dataset, batch_size=2, seed=0).epoch_batches():
        height, width = batch["pixels"].shape[-2:]  # stacked: one shape per batch
        for i, key in enumerate(batch["key"]):
            picture = tuple(int(n) for n in key.split("-")[1].split("x"))
            assert RATIOS[picture] == (width, height)
            for name in ("pixels", "original_size", "crop_top_left"):
                assert torch.equal(batch[name][i], expected[key][name]), (key, name)
            seen.append(key)
    assert sorted(seen) == sorted(READABLE)  # each once: full buffers, then the partly filled ones
    assert dataset.stats.skipped == {"too small": 1}  # from its header, never decoded


def test_the_partly_filled_buffers_end_the_epoch_as_smaller_batches_in_bucket_order(pattern):
    batches = list(make_batches(build_dataset(stream_config(pattern)), batch_size=2, seed=1).epoch_batches())
    sizes = [len(batch["key"]) for batch in batches]
    assert sizes == [2] * 5 + [1] * 5  # 3 per bucket
    leftover_shapes = [tuple(batch["pixels"].shape[-2:]) for batch in batches[5:]]
    assert leftover_shapes == sorted(leftover_shapes)
    assert "5 of" not in build_dataset(stream_config(pattern)).buckets.histogram_line()  # no histogram before the stream


@pytest.mark.parametrize("batch_size,shuffle_buffer", [(2, 4), (3, 100)])
def test_resume_after_any_batch_continues_exactly(pattern, batch_size, shuffle_buffer):
    config = stream_config(pattern, shuffle_buffer=shuffle_buffer, crop="random", random_flip=True)
    batches = lambda: make_batches(build_dataset(config, seed=2), batch_size=batch_size, seed=2)  # noqa: E731
    per_epoch = len(list(batches().epoch_batches()))
    stream = iter(batches())
    expected = [next(stream) for _ in range(per_epoch + 2)]  # into the second epoch
    held_somewhere = False
    for taken in range(per_epoch + 1):
        first = batches()
        stream = iter(first)
        for _ in range(taken):
            next(stream)
        position = json.loads(json.dumps(first.position()))  # as trainer.json keeps it
        held_somewhere |= bool(position.get("stream") and position["stream"]["positions"][0]["held"])
        resumed = batches()
        resumed.seek(position)
        stream = iter(resumed)
        again = [next(stream) for _ in range(per_epoch + 2 - taken)]
        assert keys(again) == keys(expected[taken:]), taken
        assert all(torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["crop_top_left"], b["crop_top_left"]) for a, b in zip(again, expected[taken:]))
    assert held_somewhere  # some checkpoints fell while a bucket's buffer was partly filled


def test_resume_loses_and_repeats_nothing_and_decodes_only_what_it_trains_on(pattern, monkeypatch):
    config = stream_config(pattern)
    first = make_batches(build_dataset(config, seed=4), batch_size=2, seed=4)
    stream = iter(first)
    consumed = sum((next(stream)["key"] for _ in range(3)), [])
    held = first.position()["stream"]["positions"][0]["held"]
    assert held  # samples read, waiting in their buffers, not trained on
    decoded, decode = [], stream_buckets.decode_image
    monkeypatch.setattr(stream_buckets, "decode_image", lambda source, draft: decoded.append(source) or decode(source, draft=draft))
    resumed = make_batches(build_dataset(config, seed=4), batch_size=2, seed=4)
    resumed.seek(first.position())
    rest = sum(keys(resumed.epoch_batches()), [])
    assert sorted(consumed + rest) == sorted(READABLE)
    assert len(decoded) == len(rest)  # the held ones again, the unread ones; none of the consumed


def test_a_process_of_two_with_two_workers_keeps_each_workers_buffers_and_resumes_its_place(pattern):
    config = stream_config(pattern)
    batches = lambda rank, workers: make_batches(build_dataset(config, seed=3, rank=rank, world_size=2), 2, seed=3, num_workers=workers)  # noqa: E731
    whole = keys(batches(0, 2).epoch_batches())
    first = batches(0, 2)
    stream = first.epoch_batches()
    for _ in range(3):  # the next batch is the second worker's
        next(stream)
    position = json.loads(json.dumps(first.position()))
    assert position["stream"]["workers"] == 2 and any(place["held"] for place in position["stream"]["positions"])
    resumed = batches(0, 2)
    resumed.seek(position)
    assert keys(resumed.epoch_batches()) == whole[3:]
    other = keys(batches(1, 0).epoch_batches())
    assert sorted(sum(whole + other, [])) == sorted(READABLE)  # shards split disjointly and completely


def pooled_encoder(pixels):
    mean = F.avg_pool2d(pixels, 4)  # (B, 3, H/4, W/4)
    return mean, torch.full_like(mean, 0.1)


def test_the_latent_cache_of_a_bucketed_stream_keeps_each_shape(tmp_path, pattern):
    dataset = build_dataset(stream_config(pattern))
    square = build_dataset(folder_config(pattern, source="webdataset", resolution=32))
    assert cache_key("vae", dataset.describe()) != cache_key("vae", square.describe())
    cache = LatentCache(tmp_path / "cache", cache_key("vae", dataset.describe()), shard_size=4)
    build_latent_cache(dataset, pooled_encoder, cache, batch_size=2, progress=False)
    assert set(cache.latent_shapes().values()) == {(3, h // 4, w // 4) for w, h in RATIOS.values()}
    assert set(cache.keys()) == READABLE
    cached = CachedLatentDataset(cache, caption_dropout=0.0, bucketed=True)
    sizes = {sample["key"]: sample["original_size"].tolist() for sample in dataset}
    for batch in make_batches(cached, batch_size=2, seed=0).epoch_batches():
        assert batch["latent_mean"].ndim == 4  # one shape per batch
        assert [size.tolist() for size in batch["original_size"]] == [sizes[key] for key in batch["key"]]
