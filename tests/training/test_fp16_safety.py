"""fp16 correctness on the CPU: a step the loss scaler skips (simulated: accelerate's
optimizer_step_was_skipped forced on two steps) moves neither the LR schedule nor EMA and is
counted; the frozen VAE encodes outside autocast, in fp32."""

import torch
from accelerate import Accelerator
from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.training.checkpoints import load_checkpoint
from ldm.training.latents import encode_in_full_precision
from ldm.training.loop import train

SKIPPED = (2, 3)  # the optimizer steps (1-based) the scaler "skips"


def test_scaler_skipped_steps_move_neither_the_lr_schedule_nor_ema(tmp_path, monkeypatch):
    steps = {"asked": 0}

    def was_skipped(accelerator) -> bool:
        steps["asked"] += 1
        return steps["asked"] in SKIPPED

    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(was_skipped))
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=4, save_every=4, ema_decay=0.9, warmup_steps=10)
    result = train(config, open_dataset=tiny_datasets(n=4))
    assert steps["asked"] == 4
    assert result.scaler_skipped_steps == 2 and result.skipped_steps == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-000004")
    applied = 4 - len(SKIPPED)
    assert state.lr_scheduler["last_epoch"] == applied  # warm-up went 2 steps, not 4
    assert state.ema["optimization_step"] == applied
    assert state.counters["scaler_skipped_steps"] == 2


class RecordingVAE(torch.nn.Module):
    """Says in which precision and under which autocast state it was asked to encode."""

    dtype = torch.float32

    def encode(self, pixels):
        self.seen = (pixels.dtype, torch.is_autocast_enabled("cpu"))
        return type("Out", (), {"latent_dist": "posterior"})()


def test_the_vae_encodes_in_fp32_outside_autocast():
    vae = RecordingVAE()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert encode_in_full_precision(vae, torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16)) == "posterior"
    assert vae.seen == (torch.float32, False)
