import json

import pytest
import torch

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.config import ConfigError
from ldm.formats.model_folder import load_component
from ldm.training.config import validate_train
from ldm.training.loop import train


def test_few_steps_export_a_vae_with_measured_scaling_factor(tmp_path):
    config = tiny_train_config("autoencoder", tmp_path / "run", max_steps=3)
    config.model.vae.scaling_factor = None
    config.autoencoder.disc_start = 1  # the discriminator joins at the second step
    config.autoencoder.disc_channels = 8
    config.autoencoder.disc_layers = 2
    config.validation.every = 2
    result = train(config, open_dataset=tiny_datasets())
    vae, vae_config = load_component(result.export_path, "vae")
    assert vae_config.scaling_factor is not None and vae_config.scaling_factor > 0
    assert vae.config.scaling_factor == vae_config.scaling_factor
    # The measured factor gives unit-variance latents on the same images.
    pixels = torch.stack([tiny_datasets()("train")[i]["pixels"] for i in range(4)])
    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(0))
    assert abs(float((latents * vae_config.scaling_factor).std()) - 1.0) < 0.05
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("discriminator" in r for r in rows) and not any("discriminator" in r for r in rows if r.get("step") == 1)
    metrics = [r for r in rows if "validation_psnr" in r]
    assert [r["step"] for r in metrics] == [2, 3] and all(0 < r["validation_ssim"] <= 1 for r in metrics)


def test_fixed_scaling_factor_is_kept_and_text2img_uses_the_vae(tmp_path):
    config = tiny_train_config("autoencoder", tmp_path / "vae-run", max_steps=1)
    config.model.vae.scaling_factor = 0.3
    vae_path = train(config, open_dataset=tiny_datasets()).export_path
    assert load_component(vae_path, "vae")[1].scaling_factor == 0.3
    config = tiny_train_config("text2img", tmp_path / "t2i-run", max_steps=1)
    config.text2img.vae_from = str(vae_path)
    config.model.vae.scaling_factor = None  # the VAE folder brings its own
    model = train(config, open_dataset=tiny_datasets()).export_path
    assert "scaling_factor: 0.3" in (model / "model.yaml").read_text()


def test_reconstruction_loss_falls_on_a_fixed_batch(tmp_path):
    config = tiny_train_config("autoencoder", tmp_path / "run", max_steps=40, lr=3e-3, save_every=1000, max_grad_norm=None)
    result = train(config, open_dataset=tiny_datasets(n=2))
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first / 3, (first, last)


def test_crop_trains_on_random_pieces_and_evaluates_whole_pictures(tmp_path, monkeypatch):
    from ldm.training import autoencoder_stage

    seen = []
    encode = autoencoder_stage.AutoencoderModule.forward

    def watched(self, batch, randomness, step):
        original = self.vae.encode
        self.vae.encode = lambda pixels: (seen.append(tuple(pixels.shape)), original(pixels))[1]
        try:
            return encode(self, batch, randomness, step)
        finally:
            del self.vae.encode

    monkeypatch.setattr(autoencoder_stage.AutoencoderModule, "forward", watched)
    config = tiny_train_config("autoencoder", tmp_path / "run", max_steps=2)
    config.autoencoder.crop = 16
    config.model.vae.scaling_factor = None
    result = train(config, open_dataset=tiny_datasets())
    assert config.data.resolution == 32 and len(seen) == 2 and all(shape[-2:] == (16, 16) for shape in seen), seen
    # The exported VAE and its measured scaling factor came from whole pictures.
    vae, vae_config = load_component(result.export_path, "vae")
    assert vae_config.scaling_factor > 0


def test_crop_that_the_vae_cannot_encode_is_a_config_error(tmp_path):
    config = tiny_train_config("autoencoder", tmp_path / "run", max_steps=1)
    for crop in (config.model.vae.downsample_factor + 1, 64):
        config.autoencoder.crop = crop
        with pytest.raises(ConfigError, match="autoencoder.crop must be a multiple of the VAE's factor"):
            validate_train(config)


def test_the_dry_run_plans_a_step_on_the_crop(tmp_path):
    from ldm.training.dry_run import dry_run_report

    config = tiny_train_config("autoencoder", tmp_path / "run", max_steps=1)
    factor = config.model.vae.downsample_factor
    assert f"x {32 // factor} x {32 // factor} per image (32 px)" in dry_run_report(config)
    config.autoencoder.crop = 16
    cropped = dry_run_report(config)
    assert f"x {16 // factor} x {16 // factor} per image (16 px)" in cropped and "random 16 px crops of 32 px pictures" in cropped
