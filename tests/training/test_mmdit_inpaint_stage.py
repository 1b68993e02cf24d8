"""Stage `inpaint` on a tiny flow-matching MMDiT: its patch embedding widens from C to C + 1 + C
input channels (latents, mask, masked-image latents) with zero weights, so step 0 is the
text-to-image MMDiT; a few flow steps reach the new channels, resume exactly, and export an
inpainting model that ldm-inpaint draws with."""

import copy

import pytest
import torch

from flow_mmdit import FLOW, adapting_config, save_flow_mmdit
from tiny import build_tiny
from tiny_data import tiny_datasets

from ldm.formats.model_folder import read_model_config, read_safetensors
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.loop import train

def mmdit_inpaint_config(output_dir, init_from, max_steps=4):
    return adapting_config("inpaint", output_dir, {"init_from": init_from}, max_steps=max_steps, ema_decay=0.5)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_flow_mmdit(tmp_path_factory.mktemp("mmdit-base") / "model")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base):
    return train(mmdit_inpaint_config(tmp_path_factory.mktemp("mmdit-inpaint") / "run", base), open_dataset=tiny_datasets())


def test_the_widened_mmdit_at_step_zero_is_the_text2img_mmdit():
    from ldm.diffusion.backbones import backbone_of
    from ldm.diffusion.conditioning import Conditioning
    from ldm.training.inpaint_stage import widen_to_inpainting

    components = build_tiny(denoiser="mmdit", **FLOW)
    wide = copy.deepcopy(components.denoiser)
    widen_to_inpainting(wide, latent_channels=4)
    assert wide.config.in_channels == 9 and wide.pos_embed.proj.in_channels == 9
    cond = components.conditioner(["a red circle", "a blue square"])
    g = torch.Generator().manual_seed(0)
    latents, extra = torch.randn(2, 4, 16, 16, generator=g), 100 * torch.randn(2, 5, 16, 16, generator=g)
    with torch.no_grad():
        expected = backbone_of(components.denoiser)(latents, torch.tensor([100, 900]), cond)
        got = backbone_of(wide)(latents, torch.tensor([100, 900]), Conditioning(cond.tokens, pooled=cond.pooled, concat=extra))
    assert torch.equal(got, expected)


def test_a_few_flow_steps_export_an_inpainting_mmdit_that_ldm_inpaint_draws(trained, tmp_path, photo, square_mask):
    from PIL import Image

    from ldm.cli import inpaint
    from ldm.pipeline import Pipeline

    assert trained.step == 4 and all(torch.isfinite(torch.tensor(trained.losses)))
    folder = trained.export_path
    config = read_model_config(folder)
    assert (config.denoiser.kind, config.denoiser.in_channels, config.scheduler.prediction_type) == ("mmdit", 9, "flow")
    assert Pipeline.load(folder).is_inpainting_model
    weight = read_safetensors(folder / "denoiser.safetensors")["pos_embed.proj.weight"]  # (out, 9, p, p)
    assert weight[:, 4:].abs().sum() > 0  # training reached the mask and masked-latent channels
    photo.save(tmp_path / "photo.png")
    square_mask.save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    argv = ["a cat", "--model", str(folder), "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
            "--steps", "2", "--seed", "1", "--sampler", "flow-euler", "--quiet", "--out", str(out)]  # fmt: skip
    assert inpaint.main(argv) == 0
    assert Image.open(out).size == (32, 32)


def test_resume_continues_as_if_never_stopped(trained, tmp_path, base):
    train(mmdit_inpaint_config(tmp_path / "run", base, max_steps=2), open_dataset=tiny_datasets())
    resumed = train(mmdit_inpaint_config(tmp_path / "run", base), resume=resolve_checkpoint("latest", tmp_path / "run"),
                    open_dataset=tiny_datasets())  # fmt: skip
    assert resumed.losses == trained.losses[2:]
    a, b = read_safetensors(trained.export_path / "denoiser.safetensors"), read_safetensors(resumed.export_path / "denoiser.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
