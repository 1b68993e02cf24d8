"""The flow objective in training: a tiny flow text2img run has finite losses and resumes
exactly (its noise levels are drawn through the step's randomness, like every draw); min-SNR on
a flow model is refused in one line. LCM from a flow teacher: test_lcm_flow.py."""

import pytest
import torch
from test_resume import killed_during_step, on_disk

from configs import tiny_train_config

from ldm.config import ConfigError
from ldm.formats.model_folder import read_safetensors
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.loop import train

FLOW = {"prediction_type": "flow", "shift": 2.0, "timestep_sampling": "logit_normal", "loss_weighting": "cosmap"}


def flow_run(output_dir, resume=None, backbone="unet", flow=FLOW, **settings):
    config = tiny_train_config("text2img", output_dir, backbone, max_steps=4, save_every=2, **settings)
    for key, value in flow.items():
        setattr(config.model.scheduler, key, value)
    return train(on_disk(config, n=4), resume=resume)


def resumes_exactly(whole, run, folder, monkeypatch) -> dict:
    """`run(folder)` killed in step 3 and resumed from its step-2 checkpoint ends as the
    4-step `whole` run did: same losses after the resume, same exported denoiser (returned)."""
    from ldm.training.text2img_stage import Text2ImgModule

    forward = killed_during_step(monkeypatch, 3)  # after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        run(folder)
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    second = run(folder, resume=resolve_checkpoint("latest", folder))
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    a = read_safetensors(whole.export_path / "denoiser.safetensors")
    b = read_safetensors(folder / "model" / "denoiser.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    return a


def test_a_flow_model_trains_and_resumes_exactly(tmp_path, monkeypatch):
    whole = flow_run(tmp_path / "whole")
    assert all(torch.isfinite(torch.tensor(whole.losses)))
    resumes_exactly(whole, flow_run, tmp_path / "split", monkeypatch)


def test_min_snr_on_a_flow_model_is_refused(tmp_path):
    from ldm.config import from_dict
    from ldm.training.config import TrainConfig

    from configs import tiny_train_dict

    data = tiny_train_dict("text2img", tmp_path)
    data["model"]["scheduler"] = {"prediction_type": "flow"}
    data["text2img"] = {"min_snr_gamma": 5.0}
    with pytest.raises(ConfigError, match="min_snr_gamma is a DDPM weighting"):
        from_dict(TrainConfig, data)
