"""The MMDiT as a trained denoiser (`model.denoiser.kind: mmdit`, diffusers' SD3Transformer2DModel
on our one text encoder): a tiny one trains with the flow objective, resumes exactly, exports a
model folder that ldm-generate draws from; the SD3-medium config plans its 2,028,328,000
parameters; what it cannot read or do is one line."""

import pytest
import torch
from test_flow_training import flow_run as flow_run_of
from test_flow_training import resumes_exactly
from test_resume import on_disk

from configs import tiny_train_config
from in_process import run_in_process
from tiny import build_tiny, tiny_model_dict

from ldm.config import ConfigError, model_config_from_dict
from ldm.formats.model_folder import read_safetensors
from ldm.training.loop import train

SD3 = {"prediction_type": "flow", "shift": 3.0, "timestep_sampling": "logit_normal"}


def flow_run(output_dir, resume=None, **settings):
    return flow_run_of(output_dir, resume, "mmdit", SD3, ema_decay=0.9, **settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted 4-step flow run (its model folder is the export)."""
    return flow_run(tmp_path_factory.mktemp("mmdit") / "whole")


def test_a_tiny_mmdit_trains_with_flow_and_resumes_exactly(trained, tmp_path, monkeypatch):
    assert len(trained.losses) == 4 and all(torch.isfinite(torch.tensor(trained.losses)))
    assert "context_embedder.weight" in resumes_exactly(trained, flow_run, tmp_path / "split", monkeypatch)


def test_the_export_loads_as_diffusers_class_and_ldm_generate_draws_it(trained, tmp_path):
    from diffusers import SD3Transformer2DModel
    from PIL import Image

    from ldm.cli.generate import main as generate_main
    from ldm.formats.model_folder import load_model

    components = load_model(trained.export_path)
    assert isinstance(components.denoiser, SD3Transformer2DModel)
    assert components.config.denoiser.kind == "mmdit" and components.config.scheduler.prediction_type == "flow"
    saved = read_safetensors(trained.export_path / "denoiser.safetensors")
    assert all(torch.equal(tensor, saved[name]) for name, tensor in components.denoiser.state_dict().items())
    out = tmp_path / "drawn.png"
    args = ["a red circle", "--model", trained.export_path, "--steps", "2", "--seed", "1", "--sampler", "flow-euler", "--out", out, "--quiet"]
    result = run_in_process("ldm-generate", generate_main, *args)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (32, 32)


def test_an_eps_mmdit_trains_too(tmp_path):
    """SD3 trains flow; the MMDiT itself predicts whatever the schedule asks."""
    config = tiny_train_config("text2img", tmp_path / "run", "mmdit", max_steps=2)
    assert config.model.scheduler.prediction_type == "epsilon"
    result = train(on_disk(config, n=4))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_the_text_widths_come_from_the_text_encoder():
    """Nulls: the tokens' width and the pooled projection's (our CLIP's embed_dim); a wider
    joint width reads our tokens zero-padded, as SD3 pads its CLIPs' states to T5's width."""
    from ldm.diffusion.backbones import backbone_of
    from ldm.diffusion.conditioning import Conditioning

    section = model_config_from_dict(tiny_model_dict(denoiser="mmdit")).denoiser
    assert (section.joint_attention_dim, section.pooled_projection_dim, section.caption_projection_dim) == (32, 16, 32)
    wide = build_tiny(denoiser="mmdit", mmdit__joint_attention_dim=48)
    cond = wide.conditioner(["a red circle"])
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mmdit = backbone_of(wide.denoiser)
    padded = Conditioning(torch.nn.functional.pad(cond.tokens, (0, 16)), pooled=cond.pooled)
    with torch.no_grad():
        assert torch.equal(mmdit(latents, torch.tensor([500]), cond), mmdit(latents, torch.tensor([500]), padded))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mmdit__joint_attention_dim": 16}, r"^model.denoiser.joint_attention_dim \(16\) is narrower than model.text_encoder.width \(32\)$"),
        ({"mmdit__pooled_projection_dim": 32}, r"^model.denoiser.pooled_projection_dim \(32\) must equal model.text_encoder.embed_dim \(16\)"),
        ({"mmdit__caption_projection_dim": 64}, r"^model.denoiser.caption_projection_dim \(64\) must equal num_attention_heads x attention_head_dim \(32\)$"),
        ({"mmdit__qk_norm": "layer"}, r"^model.denoiser.qk_norm is 'layer'; expected null or rms_norm$"),
        ({"mmdit__sample_size": 64}, r"^model.denoiser.sample_size \(64\) exceeds pos_embed_max_size x patch_size \(32\)$"),
        ({"text_encoder__arch": "ViT-B-32"}, r"^model.denoiser.joint_attention_dim and pooled_projection_dim must be set with model.text_encoder.arch"),
    ],
)
def test_bad_mmdit_sections_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_config_from_dict(tiny_model_dict(denoiser="mmdit", **overrides))

