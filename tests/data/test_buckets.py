"""Aspect-ratio buckets (data.buckets): the bucket list, each picture's bucket, batches of one
bucket that N processes share as one does and that resume exactly, and the latent cache."""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aspect_pictures import RATIOS, aspect_folder, aspect_hf_dataset

from ldm.data import DataError, build_dataset, make_batches
from ldm.data.batches import BucketBatches
from ldm.data.buckets import check_step, resolve_buckets
from ldm.data.config import BucketSettings
from ldm.data.decode import read_size
from ldm.data.latent_cache import CachedLatentDataset, LatentCache, build_latent_cache, cache_key

from .fixtures import folder_config, noise_image, write_image


def test_default_buckets_at_sd_scale_are_kohyas():
    buckets = resolve_buckets(True, 512)
    assert buckets.step == 64 and (buckets.min_side, buckets.max_side, buckets.area) == (256, 1024, 512 * 512)
    assert (512, 512) in buckets.sizes and (448, 576) in buckets.sizes and (1024, 256) in buckets.sizes
    for width, height in buckets.sizes:
        assert width % 64 == 0 and height % 64 == 0 and width * height <= 512 * 512
        assert (height, width) in buckets.sizes  # portrait and landscape alike
    ratios = [w / h for w, h in buckets.sizes]
    assert ratios == sorted(ratios)
    # SDXL's own training shapes come out of the 1024 px defaults.
    sdxl = resolve_buckets(True, 1024)
    assert sdxl.sizes[sdxl.assign(4000, 3000)] == (1152, 896) and sdxl.sizes[sdxl.assign(1080, 1920)] == (768, 1344)


def test_small_resolutions_get_a_small_step_that_keeps_whole_latents():
    assert [resolve_buckets(True, r).step for r in (32, 64, 128, 256, 2048)] == [8, 16, 32, 64, 64]
    assert set(RATIOS.values()) <= set(resolve_buckets(True, 32).sizes)
    check_step(True, 32, 8)
    with pytest.raises(DataError, match=r"^data.buckets.step must be a multiple of the VAE's downsampling factor 8, got 12$"):
        check_step(BucketSettings(step=12), 512, 8)


def test_a_setting_with_no_bucket_is_one_line():
    with pytest.raises(DataError, match=r"^data.buckets has no valid bucket: .*area <= 1000") as error:
        resolve_buckets(BucketSettings(area=1000, min_side=64), 512)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=r"^data.buckets.step must be positive"):
        build_dataset(folder_config("unused", buckets=BucketSettings(step=0)))


def test_each_picture_goes_to_the_nearest_ratio_among_buckets_inside_it():
    buckets = resolve_buckets(True, 32)
    for (width, height), bucket in RATIOS.items():
        assert buckets.sizes[buckets.assign(width, height)] == bucket
    assert buckets.assign(12, 12) is None  # smaller than every bucket
    # 36x33 is nearest 32x32; 44x31 would be too, but holds no 32x32: the nearest ratio that
    # fits inside it, never an upscale; 36x31 holds none of them.
    assert buckets.sizes[buckets.assign(36, 33)] == (32, 32) and buckets.sizes[buckets.assign(44, 31)] == (40, 24)
    assert buckets.assign(36, 31) is None
    for width, height in [(44, 31), (200, 37), (17, 70)]:
        w, h = buckets.sizes[buckets.assign(width, height)]
        assert w <= width and h <= height


def test_header_size_follows_the_exif_rotation(tmp_path):
    image = noise_image(24, 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated a quarter: viewers show it 16 wide, 24 high
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif)
    assert read_size(path) == ((16, 24), None)
    assert read_size(b"not an image") == (None, "unreadable")


@pytest.fixture
def bucket_folder(tmp_path):
    return aspect_folder(tmp_path / "aspect", per_ratio=3)


def bucketed(path, **settings):
    return build_dataset(folder_config(path, resolution=32, buckets=True, **settings))


def test_samples_have_their_bucket_shape_and_size_conditioning(bucket_folder):
    dataset = bucketed(bucket_folder)
    for sample in dataset:
        width, height = (int(n) for n in sample["key"].split("-")[1].removesuffix(".png").split("x"))
        bucket = RATIOS[(width, height)]
        assert sample["pixels"].shape == (3, bucket[1], bucket[0])
        assert sample["original_size"].tolist() == [height, width] and sample["original_size"].dtype == torch.long
        # Centre crop of the picture resized to just cover its bucket: [top, left] in it.
        scale = max(bucket[0] / width, bucket[1] / height)
        resized = (max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale)))
        assert sample["crop_top_left"].tolist() == [(resized[1] - bucket[1]) // 2, (resized[0] - bucket[0]) // 2]
    assert dataset.stats.skipped == {"too small": 1}  # counted once, unread
    assert dataset.buckets.histogram_line().startswith("buckets: 16x48 x3, 24x40 x3, 32x32 x3, 40x24 x3, 48x16 x3 (15 samples in 5 of 9 buckets; 1 skipped: 1 too small)")


def test_the_square_path_also_says_size_and_crop(tmp_path):
    write_image(tmp_path / "square" / "a.png", noise_image(24, 20)).with_suffix(".txt").write_text("a")
    sample = next(iter(build_dataset(folder_config(tmp_path / "square"))))  # resolution 16, centre crop
    assert sample["pixels"].shape == (3, 16, 16)
    assert sample["original_size"].tolist() == [20, 24] and sample["crop_top_left"].tolist() == [0, 1]  # 24x20 -> 19x16


def test_random_crops_and_flips_stay_in_their_bucket(bucket_folder):
    dataset = bucketed(bucket_folder, crop="random", random_flip=True)
    for epoch in range(2):
        for position in range(len(dataset)):
            sample = dataset[(epoch, position)]
            if sample is not None:
                bucket = dataset.buckets.size_of(position)
                assert sample["pixels"].shape[1:] == (bucket[1], bucket[0])


def epoch_of(batcher) -> list[list[str]]:
    return [batch["key"] for batch in batcher.epoch_batches()]


def test_every_batch_is_one_bucket_and_every_full_bucket_is_trained(bucket_folder):
    dataset = bucketed(bucket_folder)
    batcher = make_batches(dataset, batch_size=2, seed=3)
    assert isinstance(batcher, BucketBatches) and batcher.batches_per_epoch == 5  # 3 per bucket: one batch each
    seen = set()
    for batch in batcher.epoch_batches():
        assert len(batch["key"]) == 2 and len({dataset.buckets.of[int(key[:3])] for key in batch["key"]}) == 1
        assert batch["pixels"].ndim == 4 and batch["original_size"].shape == (2, 2)
        seen |= set(batch["key"])
    assert len(seen) == 10
    assert epoch_of(make_batches(dataset, 2, seed=3)) != epoch_of(make_batches(dataset, 2, seed=4))


def test_two_processes_read_what_one_reads_and_resume_exactly(bucket_folder):
    dataset = bucketed(bucket_folder, crop="random")
    one = epoch_of(make_batches(dataset, batch_size=2, seed=1))
    halves = [epoch_of(make_batches(dataset, batch_size=1, seed=1, rank=rank, world_size=2)) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == one
    resumed = make_batches(dataset, batch_size=2, seed=1)
    resumed.seek({"epoch": 0, "batch": 3})
    assert epoch_of(resumed) == one[3:]
    assert resumed.position() == {"epoch": 1, "batch": 0}


def test_too_few_pictures_per_bucket_for_a_batch_is_one_line(bucket_folder):
    with pytest.raises(DataError, match=r"^no aspect-ratio bucket holds one global batch \(4 x 1 processes; buckets: 16x48 x3"):
        make_batches(bucketed(bucket_folder), batch_size=4)


def test_a_datasets_source_is_bucketed_alike(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    path = aspect_hf_dataset(tmp_path / "saved")
    dataset = build_dataset(folder_config(path, source="hf", resolution=32, buckets=True))
    shapes = sorted({tuple(s["pixels"].shape[1:]) for s in dataset})
    assert shapes == sorted((h, w) for w, h in RATIOS.values())
    assert dataset.stats.skipped == {"too small": 1}


def pooled_encoder(pixels):
    mean = F.avg_pool2d(pixels, 4)  # (B, 3, H/4, W/4)
    return mean, torch.full_like(mean, 0.1)


def test_the_latent_cache_keeps_each_bucket_shape_and_batches_by_it(tmp_path, bucket_folder):
    dataset = bucketed(bucket_folder)
    square = build_dataset(folder_config(bucket_folder, resolution=32))
    assert cache_key("vae", dataset.describe()) != cache_key("vae", square.describe())
    cache = LatentCache(tmp_path / "cache", cache_key("vae", dataset.describe()), shard_size=2)
    build_latent_cache(dataset, pooled_encoder, cache, batch_size=2, progress=False)
    shapes = set(cache.latent_shapes().values())
    assert shapes == {(3, h // 4, w // 4) for w, h in RATIOS.values()}
    cached = CachedLatentDataset(cache, caption_dropout=0.0, bucketed=True)
    samples = {s["key"]: s for s in dataset}
    for batch in make_batches(cached, batch_size=2, seed=0).epoch_batches():
        assert batch["latent_mean"].ndim == 4  # one shape per batch
        for key, size, crop in zip(batch["key"], batch["original_size"], batch["crop_top_left"]):
            assert size.tolist() == samples[key]["original_size"].tolist() and crop.tolist() == samples[key]["crop_top_left"].tolist()
    assert math.isclose(float(cached[0]["latent_std"].mean()), 0.1, rel_tol=1e-6)


def test_every_size_crops_to_its_bucket_at_every_offset():
    from ldm.data.transforms import ImageTransform

    buckets = resolve_buckets(True, 32)
    random, centre = ImageTransform(32, "random", flip=True), ImageTransform(32)
    for width in range(16, 90, 7):
        for height in range(16, 90, 5):
            bucket = buckets.assign(width, height)
            if bucket is None:
                continue
            w, h = buckets.sizes[bucket]
            image = noise_image(width, height)
            assert centre(image, size=(w, h)).shape == (3, h, w)
            for seed in range(4):  # offsets up to the far edge, where rounding could leave the picture
                pixels, (top, left) = random.crop_of(image, torch.Generator().manual_seed(seed), (w, h))
                assert pixels.shape == (3, h, w) and top >= 0 and left >= 0
