import json

import pytest
import torch

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.training.loop import train


def test_few_steps_write_a_model_folder_that_generates(tmp_path, backbone):
    config = tiny_train_config("text2img", tmp_path / "run", backbone, max_steps=3, ema_decay=0.9)
    config.validation.prompts = ["red over blue", "green over red"]
    config.validation.steps = 2
    result = train(config, open_dataset=tiny_datasets())
    assert result.step == 3 and len(result.losses) == 3
    from ldm.pipeline import Pipeline

    pipeline = Pipeline.load(result.export_path)
    image = pipeline.generate("red over blue", steps=2, seed=1, progress=False).images[0]
    assert image.size == (32, 32)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(r["images_per_s"] > 0 for r in steps)
    assert (tmp_path / "run" / "samples" / "step-000003.png").is_file()
    assert any((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))


def test_exported_weights_are_the_ema_weights(tmp_path, backbone):
    from ldm.formats.model_folder import read_safetensors

    config = tiny_train_config("text2img", tmp_path / "run", backbone, max_steps=2, ema_decay=0.5)
    result = train(config, open_dataset=tiny_datasets())
    exported = read_safetensors(result.export_path / "denoiser.safetensors")
    ema = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000002" / "ema.safetensors")
    trained = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000002" / "weights.safetensors")
    from ldm.models.components import build_components

    name = {"unet": "conv_in.weight", "dit": "pos_embed.proj.weight"}[backbone]
    # EMA shadow parameters follow the order of the trained module's parameters.
    order = [n for n, _ in build_components(config.model).denoiser.named_parameters()]
    index = order.index(name)
    assert torch.equal(exported[name], ema[f"ema.shadow_params.{index}"])
    assert not torch.equal(exported[name], trained[f"denoiser.{name}"])


def test_loss_falls_on_a_fixed_batch(tmp_path, backbone):
    # Two samples, the whole dataset in one batch, no caption dropout: the denoiser can overfit.
    config = tiny_train_config("text2img", tmp_path / "run", backbone, max_steps=25, lr=3e-3, save_every=1000, batch_size=2, max_grad_norm=None)
    config.data.caption_dropout = 0.0
    # Same noise and timesteps every step: a fixed batch in the strict sense.
    from ldm.training import batches

    original = batches.Randomness.__init__
    try:
        batches.Randomness.__init__ = lambda self, seed, step, micro, *rest: original(self, seed, 0, 0, *rest)
        result = train(config, open_dataset=tiny_datasets(n=2))
    finally:
        batches.Randomness.__init__ = original
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first / 4, (first, last)


def test_min_snr_noise_offset_and_zero_terminal_snr_run(tmp_path, backbone):
    config = tiny_train_config("text2img", tmp_path / "run", backbone, max_steps=2, gradient_checkpointing=True, grad_accum=2)
    config.model.scheduler.rescale_betas_zero_snr = True
    config.model.scheduler.prediction_type = "v_prediction"
    config.text2img.min_snr_gamma = 5.0
    config.text2img.noise_offset = 0.1
    result = train(config, open_dataset=tiny_datasets())
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_null_scaling_factor_is_refused(tmp_path):
    from ldm.config import ConfigError

    config = tiny_train_config("text2img", tmp_path / "run")
    config.model.vae.scaling_factor = None
    with pytest.raises(ConfigError, match="scaling_factor"):
        train(config, open_dataset=tiny_datasets())
