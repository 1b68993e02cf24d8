import json

import torch

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.formats.model_folder import load_component
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
