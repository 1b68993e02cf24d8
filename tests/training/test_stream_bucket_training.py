"""Training in aspect-ratio buckets from webdataset shards (data.buckets, ldm.data.stream_buckets):
pictures of five aspect ratios in tar shards, streamed or through the latent cache, one bucket
per batch; a run killed while buckets are partly filled resumes with the same losses; two
processes each resume their own place and buffers."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from aspect_pictures import RATIOS, aspect_shards
from configs import tiny_train_config
from test_multiprocess import launch, logged
from test_resume import killed_during_step

from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.loop import train

BUCKET_SHAPES = {(h, w) for w, h in RATIOS.values()}


def shard_run(output_dir, pattern, resume=None, **settings):
    config = tiny_train_config("text2img", output_dir, **{"save_every": 1000, **settings})
    config.data.source, config.data.path, config.data.buckets, config.data.shuffle_buffer = "webdataset", pattern, True, 3
    config.data.caption_dropout = 0.0
    return config


@pytest.fixture
def batch_shapes(monkeypatch):
    """The (h, w) of every batch the denoiser trains on: pixels, or cached latents scaled to pixels."""
    from ldm.training.text2img_stage import Text2ImgModule

    shapes, forward = [], Text2ImgModule.forward

    def spy(self, batch, randomness, step):
        if "pixels" in batch:
            shapes.append(tuple(batch["pixels"].shape[-2:]))
        else:  # the tiny VAE's factor 2
            shapes.append(tuple(2 * side for side in batch["latent_mean"].shape[-2:]))
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", spy)
    return shapes


@pytest.mark.parametrize("latent_cache", [False, True])
def test_five_aspect_ratios_stream_one_bucket_per_batch(tmp_path, batch_shapes, latent_cache):
    # 10 pictures in 5 buckets, batch 2: an epoch is 5 steps, one per bucket.
    pattern = aspect_shards(tmp_path / "shards", shards=3, per_ratio=2)
    config = shard_run(tmp_path / "run", pattern, max_steps=5)
    config.text2img.latent_cache = latent_cache
    result = train(config)
    assert len(batch_shapes) == 5 and set(batch_shapes) == BUCKET_SHAPES
    assert result.data.skipped == {"too small": 1}  # counted from its header
    assert result.cached_samples == (10 if latent_cache else 0)
    assert "buckets: 9 buckets from 16x64 to 64x16" in (tmp_path / "run" / "log.jsonl").read_text()


def test_a_run_killed_with_buckets_partly_filled_resumes_with_the_same_losses(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    # 15 pictures, batch 2: each bucket's third waits; the checkpoint at step 3 holds some.
    pattern = aspect_shards(tmp_path / "shards", shards=3, per_ratio=3)
    settings = {"max_steps": 7, "save_every": 3, "ema_decay": 0.9}

    def config(name):
        run = shard_run(tmp_path / name, pattern, **settings)
        run.data.crop, run.data.random_flip = "random", True
        return run

    whole = train(config("whole"))
    forward = killed_during_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(config("split"))
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    checkpoint = resolve_checkpoint("latest", tmp_path / "split")
    saved = json.loads((checkpoint / "trainer.json").read_text())["data_position"]
    assert saved["processes"][0]["stream"]["positions"][0]["held"]
    second = train(config("split"), resume=checkpoint)
    assert second.losses == pytest.approx(whole.losses[3:], abs=1e-6)


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI not installed")
def test_two_processes_resume_each_its_own_place_and_buckets(tmp_path):
    # 4 shards of 4: each process streams 2 shards, batch 2; the checkpoint at step 2 is mid-epoch.
    pattern = aspect_shards(tmp_path / "shards", shards=4, per_ratio=3)
    launch(tmp_path / "whole", 2, 2, pattern, "unet", buckets=True)
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-000002"
    saved = json.loads((checkpoint / "trainer.json").read_text())["data_position"]
    places = [process["stream"]["positions"][0] for process in saved["processes"]]
    assert len(places) == 2 and any(place["held"] for place in places)
    launch(tmp_path / "resumed", 2, 2, pattern, "unet", resume=checkpoint, buckets=True)
    assert logged(tmp_path / "resumed", "loss") == pytest.approx(logged(tmp_path / "whole", "loss")[2:], abs=1e-6)
