"""ldm.diffusion.backbones: one registry finds the adapter of each backbone, also when the
module is wrapped by torch.compile (what a user compiling the denoiser for speed hands
over); the one call contract (ldm.diffusion.denoiser) runs through it."""

from pathlib import Path

import pytest
import torch

from tiny import BACKBONES as KINDS
from tiny import KINDS as CONFIGURABLE_KINDS
from tiny import build_tiny

from ldm.config import DENOISER_SECTIONS
from ldm.control.denoiser import ActiveControl, with_controls
from ldm.diffusion.backbones import BACKBONES, UnknownBackbone, backbone_of
from ldm.diffusion.backbones.registry import backbone_for_class, backbone_for_config, backbone_in_diffusers_folder
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import denoise_call
from ldm.errors import LdmError
from ldm.settings import GenerationError


@pytest.mark.parametrize("kind", KINDS)
def test_each_backbone_and_its_compiled_module_are_found(kind):
    components = build_tiny(denoiser=kind)
    denoiser = components.denoiser
    compiled = torch.compile(denoiser)  # wrapping is lazy: nothing compiles until called
    assert backbone_of(compiled).kind == backbone_of(denoiser).kind == kind
    assert backbone_of(compiled).inner is denoiser and backbone_of(compiled).module is compiled
    assert backbone_for_config(components.config.denoiser) is type(backbone_of(denoiser))
    assert backbone_for_class(type(denoiser).__name__) is type(backbone_of(denoiser))
    adapter = backbone_of(denoiser)
    assert backbone_of(adapter) is adapter  # an adapter (a steered one) is taken as it is


def test_the_registry_and_the_config_sections_agree():
    configurable = [b for b in BACKBONES if b.configurable]
    assert [b.kind for b in configurable] == [s.kind for s in DENOISER_SECTIONS] == CONFIGURABLE_KINDS
    assert [b.config_section for b in configurable] == list(DENOISER_SECTIONS)


def test_each_backbone_states_what_it_offers():
    unet, dit = backbone_of(build_tiny().denoiser), backbone_of(build_tiny(denoiser="dit").denoiser)
    assert (unet.supports_controlnet, unet.supports_lora, unet.patch_size) == (True, True, 1)
    assert (dit.supports_controlnet, dit.supports_lora, dit.patch_size) == (False, False, 2)
    assert unet.input_conv()[1] == "conv_in" and dit.input_conv()[1] == "proj"
    assert unet.guidance_embedding_width is None and not dit.learned_sigma
    assert backbone_of(build_tiny(unet__time_cond_proj_dim=8).denoiser).guidance_embedding_width == 8
    assert backbone_of(build_tiny(denoiser="dit", dit__learned_sigma=True).denoiser).learned_sigma


def test_an_unknown_module_is_a_clear_error():
    with pytest.raises(UnknownBackbone, match="^not a known denoiser: Linear$") as caught:
        backbone_of(torch.nn.Linear(2, 2))
    assert isinstance(caught.value, LdmError) and isinstance(caught.value, TypeError)
    with pytest.raises(UnknownBackbone, match="StableCascadeUNet; known: UNet2DConditionModel, PixArtTransformer2DModel"):
        backbone_for_class("StableCascadeUNet")
    with pytest.raises(UnknownBackbone, match="dict"):
        backbone_for_config({"kind": "unet"})


def test_a_diffusers_folder_names_its_backbone_by_its_subfolder(tmp_path: Path):
    assert backbone_in_diffusers_folder(tmp_path).kind == "unet"  # none: the error will name unet/
    (tmp_path / "transformer").mkdir()
    assert backbone_in_diffusers_folder(tmp_path).kind == "dit"


def test_controls_on_a_dit_are_a_one_line_error():
    dit = build_tiny(denoiser="dit").denoiser
    control = ActiveControl(controlnet=torch.nn.Identity(), image=torch.zeros(1, 3, 8, 8))
    assert with_controls(dit, [], 4) is dit
    with pytest.raises(GenerationError, match="^ControlNets steer U-Net and MMDiT models; this model's denoiser is a DiT$"):
        with_controls(dit, [control], 4)


@pytest.mark.parametrize("kind", KINDS)
def test_the_call_runs_through_the_contract(kind):
    denoiser = build_tiny(denoiser=kind).denoiser.eval()
    latents = torch.randn(1, denoiser.config.in_channels, 8, 8)
    context = torch.randn(1, 77, 32)
    with torch.no_grad():
        out = denoise_call(denoiser, latents, torch.tensor([10]), Conditioning(context))
    assert out.shape == latents.shape
