"""ldm-train with several captions per image and data.captions: each step trains on the caption
the data draws for (seed, epoch, sample), whether latents come from the latent cache or the
images, whether the text embeddings are remembered or not, and after a resume."""

from pathlib import Path

import pytest

from configs import tiny_train_config
from test_resume import killed_during_step
from tiny_data import tiny_image_folder

from ldm.data.config import CaptionSettings
from ldm.training import text2img_stage
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.loop import train
from ldm.training.text_embeddings import TextEmbeddingMemory


def captioned_folder(folder: Path) -> Path:
    """4 tiny images, each with NAME.txt and NAME.1.txt of 4 tags."""
    tiny_image_folder(folder, 4)
    for sidecar in sorted(folder.glob("*.txt")):
        colours = sidecar.read_text().split(" over ")
        sidecar.write_text(f"{colours[0]}, {colours[1]}, two tones, a ramp")
        sidecar.with_suffix(".1.txt").write_text(f"{colours[1]} below, {colours[0]} above, smooth, tiny")
    return folder


def run(output_dir: Path, images: Path, latent_cache: bool, memory_mb: float, resume=None):
    # 4 samples, batch 2: 2 steps an epoch, 6 steps: 3 epochs; a checkpoint at step 3.
    config = tiny_train_config("text2img", str(output_dir), max_steps=6, save_every=3)
    config.data.path = str(images)
    config.data.captions = CaptionSettings(shuffle_tags=True, keep_tokens=1, trigger="sks", tag_dropout=0.25)
    config.text2img.latent_cache = latent_cache
    config.text2img.text_embedding_memory_mb = memory_mb
    return train(config, resume=resume)


@pytest.fixture
def recorded(monkeypatch):
    """step -> [(key, caption)] of each trained batch, and the text memories made."""
    steps: dict[int, list] = {}
    memories: list[TextEmbeddingMemory] = []
    forward = text2img_stage.Text2ImgModule.forward

    def recording(self, batch, randomness, step):
        steps[step] = list(zip(batch["key"], batch["caption"]))
        return forward(self, batch, randomness, step)

    class Remembered(TextEmbeddingMemory):
        def __init__(self, *args):
            super().__init__(*args)
            memories.append(self)

    monkeypatch.setattr(text2img_stage.Text2ImgModule, "forward", recording)
    monkeypatch.setattr(text2img_stage, "TextEmbeddingMemory", Remembered)
    return steps, memories


def test_cached_latents_and_remembered_embeddings_train_on_each_epoch_s_caption(tmp_path, recorded):
    steps, memories = recorded
    images = captioned_folder(tmp_path / "images")
    cached = run(tmp_path / "cached", images, latent_cache=True, memory_mb=16)
    cached_steps = dict(steps)
    steps.clear()
    plain = run(tmp_path / "plain", images, latent_cache=False, memory_mb=0)
    assert steps == cached_steps  # the cache freezes no caption: the same one every step
    by_key: dict[str, set] = {}
    for key, caption in (pair for pairs in cached_steps.values() for pair in pairs):
        assert caption.startswith("sks, ")
        by_key.setdefault(key, set()).add(caption)
    assert all(len(captions) == 3 for captions in by_key.values())  # a new caption each of the 3 epochs
    # The memory is keyed by the caption itself: every new caption was encoded, none was reused for another.
    distinct = {caption for pairs in cached_steps.values() for _, caption in pairs} | {""}
    assert len(memories) == 1 and memories[0].misses <= len(distinct) and set(memories[0].embeddings) <= distinct
    assert cached.losses == pytest.approx(plain.losses, abs=1e-5)


def test_the_step_after_a_resume_trains_on_the_caption_of_the_uninterrupted_run(tmp_path, recorded, monkeypatch):
    steps, _ = recorded
    images = captioned_folder(tmp_path / "images")
    run(tmp_path / "whole", images, latent_cache=True, memory_mb=16)
    whole = dict(steps)
    steps.clear()
    forward = killed_during_step(monkeypatch, 4)  # after the checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", images, latent_cache=True, memory_mb=16)
    monkeypatch.setattr(text2img_stage.Text2ImgModule, "forward", forward)
    steps.clear()
    run(tmp_path / "split", images, latent_cache=True, memory_mb=16, resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert sorted(whole) == list(range(6))
    assert steps == {step: whole[step] for step in (3, 4, 5)}  # the 3 steps after the checkpoint (steps count from 0)
