"""What the text2img loss does to a batch, through the stage a config builds (the wiring from
the config included): caption dropout empties the captions the text encoder reads, and
min-SNR-gamma weights each sample's loss as diffusers' training scripts do."""

import pytest
import torch
import torch.nn.functional as F

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.data.batches import collate_samples
from ldm.training.batches import Randomness


def build_module(config, tmp_path):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    torch.manual_seed(0)
    return build_stage(StageContext(config, torch.device("cpu"), tmp_path, tiny_datasets())).module


def a_batch(n: int = 8) -> dict:
    images = tiny_datasets(n)("train")
    return collate_samples([images[i] for i in range(n)])  # captions such as "red over blue", none empty


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_caption_dropout_decides_what_the_text_encoder_reads(tmp_path, monkeypatch, dropout):
    config = tiny_train_config("text2img", tmp_path / "run")
    config.data.caption_dropout = dropout
    module = build_module(config, tmp_path)
    encoder, read = module.conditioner.encoders[0], []
    tokenize = encoder.tokenize
    monkeypatch.setattr(encoder, "tokenize", lambda captions: read.extend(captions) or tokenize(captions))
    batch = a_batch()
    module(batch, Randomness(0, 0, 0), 0)
    assert len(read) == len(batch["caption"])
    assert read == ([""] * len(read) if dropout else batch["caption"])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting_is_diffusers(tmp_path, monkeypatch, prediction_type):
    """Against diffusers' compute_snr and the weighting of its train_text_to_image.py:
    min(SNR, gamma) / SNR for eps, / (SNR + 1) for v."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from ldm.diffusion.schedule import scheduler_config

    gamma = 5.0
    config = tiny_train_config("text2img", tmp_path / "run")
    config.model.scheduler.prediction_type = prediction_type
    config.text2img.min_snr_gamma = gamma
    module = build_module(config, tmp_path)
    seen = {}
    noised, predict = module.noised, module.predict

    def keep_noised(*args):
        seen["noisy"], seen["target"], seen["timesteps"] = result = noised(*args)
        return result

    def keep_prediction(*args):
        seen["prediction"] = predict(*args)
        return seen["prediction"]

    monkeypatch.setattr(module, "noised", keep_noised)
    monkeypatch.setattr(module, "predict", keep_prediction)
    # Low noise to high, where the weights differ most (SNR from ~10^3 down to ~10^-3).
    monkeypatch.setattr(module, "sample_timesteps", lambda b, randomness: torch.tensor([3, 40, 150, 400, 600, 800, 950, 999]))
    loss, _ = module(a_batch(), Randomness(0, 3, 0), 3)

    timesteps = seen["timesteps"]
    snr = compute_snr(DDPMScheduler.from_config(scheduler_config(config.model.scheduler)), timesteps)
    weights = torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
    per_sample = F.mse_loss(seen["prediction"].float(), seen["target"].float(), reduction="none").mean(dim=(1, 2, 3))
    assert loss.item() == pytest.approx((per_sample * weights).mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(per_sample.mean().item(), rel=1e-2)  # the weighting matters here
