"""Training in aspect-ratio buckets (data.buckets): pictures of five aspect ratios, from an image
folder and from a `datasets` source, through every stage that trains the denoiser on whole
pictures (latent cache included), batched one bucket at a time; exact resume; the histogram
at the start; one-line refusals where buckets cannot apply."""

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from PIL import Image

from aspect_pictures import RATIOS, aspect_folder, aspect_hf_dataset, aspect_samples
from configs import tiny_train_config, tiny_train_dict
from test_multiprocess import launch
from test_resume import killed_during_step
from tiny_data import tiny_datasets

from ldm.config import ConfigError, from_dict
from ldm.data import DataError
from ldm.data import batches as data_batches
from ldm.formats.model_folder import read_safetensors
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig
from ldm.training.loop import train

BUCKET_SHAPES = {(h, w) for w, h in RATIOS.values()}
# Stages that train on whole pictures, and what each needs besides the data.
STAGES = {
    "text2img": {"text2img": {"latent_cache": True}},
    "inpaint": {"inpaint": {"init_from": "{model}"}},
    "lora": {"lora": {"init_from": "{model}", "rank": 2}},
    "lcm": {"lcm": {"init_from": "{model}", "guidance_embedding": 32}},
    "controlnet": {"controlnet": {"init_from": "{model}", "control_type": "canny"}, "text2img": {"latent_cache": True}},
}


def bucket_config(tmp_path, stage="text2img", data=None, sections=None, **train_settings):
    # 10 pictures in 5 buckets, global batch 2: an epoch is 5 steps, one per bucket.
    settings = {"max_steps": 5, "save_every": 5, **train_settings}
    config = tiny_train_dict(stage, tmp_path / "run", **settings)
    config["data"].update({"path": str(aspect_folder(tmp_path / "images")), "buckets": True, "caption_dropout": 0.0, **(data or {})})
    config.update(sections or {})
    return from_dict(TrainConfig, config)


@pytest.fixture
def batch_shapes(monkeypatch):
    """The (h, w) of every batch the loop is given: pixels, or cached latents scaled to pixels."""
    shapes = []
    collate = data_batches.collate_samples

    def recording(samples):
        batch = collate(samples)
        if "pixels" in batch:
            shapes.append(tuple(batch["pixels"].shape[-2:]))
        elif "latent_mean" in batch:  # the tiny VAE's factor 2
            shapes.append(tuple(2 * side for side in batch["latent_mean"].shape[-2:]))
        return batch

    monkeypatch.setattr(data_batches, "collate_samples", recording)
    return shapes


@pytest.mark.parametrize("stage", list(STAGES))
def test_five_aspect_ratios_train_one_bucket_per_batch(tmp_path, saved_tiny_models, batch_shapes, stage):
    sections = json.loads(json.dumps(STAGES[stage]).replace("{model}", str(saved_tiny_models("unet"))))
    result = train(bucket_config(tmp_path, stage, sections=sections))
    assert len(result.losses) == 5 and all(torch.isfinite(torch.tensor(result.losses)))
    assert set(batch_shapes) == BUCKET_SHAPES  # every bucket was a batch of its own
    assert result.data.skipped == {"too small": 1}  # counted from its header, never decoded
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert "buckets: 16x48 x2, 24x40 x2, 32x32 x2, 40x24 x2, 48x16 x2 (10 samples in 5 of 9 buckets; 1 skipped: 1 too small)" in log
    if stage in ("text2img", "controlnet"):
        assert result.cached_samples == 10  # one cache, latents of five shapes


def test_a_datasets_source_trains_in_buckets(tmp_path, batch_shapes, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    data = {"source": "hf", "path": str(aspect_hf_dataset(tmp_path / "saved")), "crop": "random", "random_flip": True}
    result = train(bucket_config(tmp_path, data=data))
    assert set(batch_shapes) == BUCKET_SHAPES and len(result.losses) == 5
    assert result.data.skipped == {"too small": 1}


def test_resume_in_buckets_gives_the_same_losses(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    # Random crops and flips: each sample's draws follow (seed, epoch, sample) across the resume.
    settings = {"max_steps": 7, "save_every": 3, "ema_decay": 0.9}
    data = {"crop": "random", "random_flip": True}
    whole = train(bucket_config(tmp_path / "whole", data=data, **settings))
    forward = killed_during_step(monkeypatch, 4)  # after the checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        train(bucket_config(tmp_path / "split", data=data, **settings))
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    checkpoint = resolve_checkpoint("latest", tmp_path / "split" / "run")
    second = train(bucket_config(tmp_path / "split", data=data, **settings), resume=checkpoint)
    assert second.losses == pytest.approx(whole.losses[3:], abs=1e-6)  # through the epoch boundary at step 5


@pytest.mark.parametrize("stage", ["autoencoder", "upscaler", "clip"])
def test_square_stages_refuse_buckets_in_one_line(tmp_path, stage):
    with pytest.raises(ConfigError, match=rf"^data.buckets is not used by stage {stage}: .*turn data.buckets off$"):
        bucket_config(tmp_path, stage)


def test_controlnet_maps_from_a_folder_train_in_buckets(tmp_path, saved_tiny_models, batch_shapes):
    maps = tmp_path / "maps"
    maps.mkdir()
    for name, data, _ in aspect_samples():
        Image.open(io.BytesIO(data)).convert("L").save(maps / f"{name}.png")  # the pictures' own outlines, as maps
    sections = {"controlnet": {"init_from": str(saved_tiny_models("unet")), "control_type": "raw", "control_dir": str(maps)}}
    result = train(bucket_config(tmp_path, "controlnet", sections=sections))
    assert len(result.losses) == 5 and set(batch_shapes) == BUCKET_SHAPES


def test_data_without_sizes_up_front_refuses_buckets(tmp_path):
    with pytest.raises(DataError, match=r"^data.buckets needs every image's size before training, which this TinyImages cannot give"):
        train(bucket_config(tmp_path), open_dataset=tiny_datasets())


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI not installed")
def test_two_processes_in_buckets_match_one(tmp_path):
    # As ddp_run.py configures it, in this process: one process, global batch 4.
    images = aspect_folder(tmp_path / "images", per_ratio=4)  # 4 per bucket: one global batch each
    config = tiny_train_config("text2img", tmp_path / "one", max_steps=3, batch_size=4, save_every=1000, ema_decay=0.9)
    config.data.path, config.data.buckets = str(images), True
    train(config)
    launch(tmp_path / "two", 2, 2, images, "unet", buckets=True)
    one = read_safetensors(tmp_path / "one" / "model" / "denoiser.safetensors")
    two = read_safetensors(tmp_path / "two" / "model" / "denoiser.safetensors")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 2e-4  # the tolerance test_multiprocess.py explains
    assert logged_losses(tmp_path / "one") == pytest.approx(logged_losses(tmp_path / "two"), abs=1e-6)


def logged_losses(output_dir) -> list[float]:
    return [row["loss"] for row in map(json.loads, (output_dir / "log.jsonl").read_text().splitlines()) if "loss" in row]


def test_the_dry_run_names_the_buckets(tmp_path):
    from ldm.training.dry_run import dry_run_report
    from ldm.training.process_count import ProcessCount

    report = dry_run_report(bucket_config(tmp_path), ProcessCount(1, "test"))
    assert "buckets: 9 buckets from 16x64 to 64x16 (area <= 1024 px, sides 16..64, step 8)" in report
