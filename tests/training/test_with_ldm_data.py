"""text2img on ldm.data's real datasets: an image folder read from disk, the latent cache
(the second run hits it, a changed VAE misses it), and resume on a stream."""

import pytest
import torch
from PIL import Image


from configs import tiny_train_config

from ldm.training import latents
from ldm.training.loop import train


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        colour = tuple(int(c) for c in torch.randint(0, 255, (3,), generator=g))
        Image.new("RGB", (40, 40), colour).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a square of colour {colour}")
    return folder


def config_for(image_folder, output_dir, **train_settings):
    config = tiny_train_config("text2img", output_dir, **train_settings)
    config.data.path = str(image_folder)
    config.text2img.latent_cache = str(image_folder.parent / "cache")
    return config


def count_encodes(monkeypatch):
    calls = []
    original = latents.vae_encoder

    def counting(vae, device):
        encode = original(vae, device)
        return lambda pixels: (calls.append(len(pixels)), encode(pixels))[1]

    monkeypatch.setattr(latents, "vae_encoder", counting)
    return calls


def test_second_run_hits_the_cache_and_a_changed_vae_misses_it(image_folder, tmp_path, monkeypatch):
    calls = count_encodes(monkeypatch)
    first = train(config_for(image_folder, tmp_path / "a", max_steps=2))
    assert sum(calls) == 6  # every image encoded once
    calls.clear()
    second = train(config_for(image_folder, tmp_path / "b", max_steps=2))
    assert calls == []  # hit: nothing encoded
    assert second.losses == pytest.approx(first.losses, abs=1e-6)
    config = config_for(image_folder, tmp_path / "c", max_steps=1)
    config.train.seed = 1  # different initial VAE weights
    train(config)
    assert sum(calls) == 6  # miss: encoded again
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_resume_on_ldm_data_gives_the_same_losses(image_folder, tmp_path, monkeypatch):
    whole = train(config_for(image_folder, tmp_path / "whole", max_steps=5, save_every=2))
    from ldm.training.checkpoints import resolve_checkpoint
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward

    def dies(self, batch, randomness, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        train(config_for(image_folder, tmp_path / "split", max_steps=5, save_every=2))
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    resumed = train(config_for(image_folder, tmp_path / "split", max_steps=5, save_every=2), resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert resumed.losses == pytest.approx(whole.losses[2:], abs=1e-6)
