import copy

import pytest
import torch
import torch.nn.functional as F

from ldm.data import DataError, build_dataset, make_batches
from ldm.data.latent_cache import (
    CachedLatentDataset,
    LatentCache,
    build_latent_cache,
    cache_allowed,
    cache_key,
    fingerprint_module,
)

from .fixtures import folder_config

FINGERPRINT = "vae-weights-sha"


class CountingEncoder:
    """A stand-in VAE encoder: 4-channel latents at 1/4 resolution; counts images encoded."""

    def __init__(self, fail_after_batches: int | None = None):
        self.images = 0
        self.batches = 0
        self.fail_after_batches = fail_after_batches

    def __call__(self, pixels):
        if self.fail_after_batches is not None and self.batches == self.fail_after_batches:
            raise KeyboardInterrupt  # as if the run were killed mid-build
        self.batches += 1
        self.images += len(pixels)
        pooled = F.avg_pool2d(pixels, 4)  # (B, 3, R/4, R/4)
        mean = torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)  # (B, 4, R/4, R/4)
        return mean, torch.full_like(mean, 0.1)


def make_cache(tmp_path, dataset, fingerprint=FINGERPRINT, shard_size=4):
    return LatentCache(tmp_path / "cache", cache_key(fingerprint, dataset.describe()), shard_size=shard_size)


def test_second_build_is_a_hit_and_serves_what_was_encoded(tmp_path, sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    encoder = CountingEncoder()
    cache = build_latent_cache(dataset, encoder, make_cache(tmp_path, dataset), batch_size=5, progress=False)
    assert encoder.images == 12 and len(cache) == 12
    again = make_cache(tmp_path, build_dataset(folder_config(sidecar_folder)))
    build_latent_cache(dataset, encoder, again, batch_size=5, progress=False)
    assert encoder.images == 12  # not called again
    assert again.has(again.key) and again.has("part1/img03.jpg")
    sample = {s["key"]: s for s in dataset}["part1/img03.jpg"]
    mean, std = again.get("part1/img03.jpg")
    expected_mean, _ = CountingEncoder()(sample["pixels"][None])
    assert mean.shape == (4, 4, 4) and torch.allclose(mean, expected_mean[0]) and torch.all(std == 0.1)
    assert again.captions("part1/img03.jpg") == ["caption 3"]


def test_other_vae_weights_resolution_or_captions_miss(tmp_path, sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    build_latent_cache(dataset, CountingEncoder(), make_cache(tmp_path, dataset), batch_size=6, progress=False)
    assert make_cache(tmp_path, dataset).complete
    assert not make_cache(tmp_path, dataset, fingerprint="other-weights").complete
    assert not make_cache(tmp_path, build_dataset(folder_config(sidecar_folder, resolution=24))).complete
    (sidecar_folder / "part0" / "img02.txt").write_text("a new caption")
    assert not make_cache(tmp_path, build_dataset(folder_config(sidecar_folder))).complete


def test_random_crop_or_flip_bypasses_the_cache_with_a_warning(sidecar_folder):
    for settings in ({"crop": "random"}, {"random_flip": True}):
        description = build_dataset(folder_config(sidecar_folder, **settings)).describe()
        with pytest.warns(UserWarning, match="bypassed"):
            assert not cache_allowed(description)
        with pytest.warns(UserWarning), pytest.raises(ValueError):
            cache_key(FINGERPRINT, description)


def test_a_killed_build_is_not_served_and_is_resumed(tmp_path, sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    cache = make_cache(tmp_path, dataset)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(dataset, CountingEncoder(fail_after_batches=2), cache, batch_size=4, progress=False)
    assert not cache.complete and not cache.has(cache.key)
    with pytest.raises(DataError, match="not complete"):
        cache.get("part0/img00.jpg")
    with pytest.raises(DataError):
        CachedLatentDataset(cache)
    encoder = CountingEncoder()
    build_latent_cache(dataset, encoder, cache, batch_size=4, progress=False)
    assert encoder.images == 4 and len(cache) == 12  # only the third batch was left


def test_extras_are_kept_with_each_samples_latents_across_shards(tmp_path, sidecar_folder):
    """A stage's per-sample tensors (extras_fn) come back with the sample they were made from,
    whatever shard and batch boundaries fell between them."""
    dataset = build_dataset(folder_config(sidecar_folder))
    brightness = lambda batch: {"brightness": (batch["pixels"].mean(dim=(1, 2, 3)) * 100).round().to(torch.int16)}  # noqa: E731
    cache = build_latent_cache(dataset, CountingEncoder(), make_cache(tmp_path, dataset, shard_size=5), batch_size=3, progress=False,
                               extras_fn=brightness)  # fmt: skip
    samples = {s["key"]: s for s in dataset}
    served = CachedLatentDataset(cache, caption_dropout=0.0)
    for position in range(len(served)):
        item = served[position]
        expected = brightness({"pixels": samples[item["key"]]["pixels"][None]})["brightness"][0]
        assert item["brightness"].dtype == torch.int16 and torch.equal(item["brightness"], expected)


def test_temporary_files_and_truncated_shards_are_never_served(tmp_path, sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    cache = build_latent_cache(dataset, CountingEncoder(), make_cache(tmp_path, dataset), batch_size=4, progress=False)
    shard = cache.folder / "shard-000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # torn write
    (cache.folder / ".shard-000003.safetensors.tmp-1234").write_bytes(b"partial")
    fresh = make_cache(tmp_path, dataset)
    assert not fresh.complete and not fresh.has("part0/img00.jpg")
    encoder = CountingEncoder()
    with pytest.warns(UserWarning, match="broken shard"):
        build_latent_cache(dataset, encoder, fresh, batch_size=4, progress=False)
    assert encoder.images == 4 and fresh.complete and len(fresh) == 12
    assert not list(cache.folder.glob(".*tmp-*"))


def test_cached_dataset_yields_latents_with_captions_dropped_at_read_time(tmp_path, sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    cache = build_latent_cache(dataset, CountingEncoder(), make_cache(tmp_path, dataset), batch_size=4, progress=False)
    cached = CachedLatentDataset(cache, caption_dropout=0.0)
    samples = [cached[i] for i in range(len(cached))]
    assert len(samples) == 12 and {s["caption"] for s in samples} == {f"caption {n}" for n in range(12)}
    assert samples[0]["latent_mean"].shape == samples[0]["latent_std"].shape == (4, 4, 4)
    dropped = CachedLatentDataset(cache, caption_dropout=1.0)
    assert all(dropped[(epoch, i)]["caption"] == "" for epoch in range(2) for i in range(12))
    batch = next(make_batches(CachedLatentDataset(cache), batch_size=3, num_workers=2).epoch_batches())
    assert batch["latent_mean"].shape == (3, 4, 4, 4) and len(batch["caption"]) == 3


def test_fingerprint_follows_the_weights_and_their_dtype():
    torch.manual_seed(0)
    module = torch.nn.Conv2d(3, 4, 3)
    first = fingerprint_module(module)
    assert fingerprint_module(module) == first
    assert fingerprint_module(copy.deepcopy(module).to(torch.bfloat16)) != first
    with torch.no_grad():
        module.weight[0, 0, 0, 0] += 1
    assert fingerprint_module(module) != first


def test_tiny_vae_posterior_round_trip(tmp_path, sidecar_folder):
    from ldm.config import VAEConfig
    from ldm.models.autoencoder import build_vae

    from tiny import TINY_MODEL

    torch.manual_seed(0)
    vae = build_vae(VAEConfig(**TINY_MODEL["vae"])).eval()

    def encode(pixels):
        posterior = vae.encode(pixels).latent_dist
        return posterior.mean, posterior.std  # (B, 4, R/2, R/2) each for the tiny KL-f2

    dataset = build_dataset(folder_config(sidecar_folder, validation=2))
    cache = LatentCache(tmp_path / "cache", cache_key(fingerprint_module(vae), dataset.describe()))
    build_latent_cache(dataset, encode, cache, batch_size=4, progress=False)
    assert len(cache) == 10 and cache.has(cache.key)
    sample = next(iter(dataset))
    mean, std = cache.get(sample["key"])
    with torch.no_grad():
        expected = vae.encode(sample["pixels"][None]).latent_dist
    assert mean.shape == (4, 8, 8) and torch.allclose(mean, expected.mean[0], atol=1e-5)
    assert torch.allclose(std, expected.std[0], atol=1e-5)
