"""SDXL refiners as single files in the original layout (Stability's generative-models; what
AUTOMATIC1111 and ComfyUI keep), read into the Components a refiner's diffusers folder gives
(ldm.formats.diffusers_sdxl) and written back from them:

    conditioner.embedders.0.model.*   OpenCLIP bigG under open_clip's names, the only text encoder
    model.diffusion_model.*           the U-Net; label_emb reads the pooled text and five time ids
                                      (original size, crop, aesthetic score: ldm.pipeline.refiner)
    first_stage_model.*               the VAE

What the shapes cannot tell is SDXL's (ldm/formats/layouts/stable_diffusion.yaml), and an empty
negative prompt is encoded as it is, as the refiner's own folder says
(force_zeros_for_empty_prompt: false). A refiner loads only as a refiner."""

from __future__ import annotations

from pathlib import Path

import torch

from ldm.config import SchedulerConfig, VAEConfig
from ldm.diffusion.schedule import scheduler_config
from ldm.formats.original_layout import unet_from_original, unet_to_original, vae_from_original, vae_to_original
from ldm.formats.original_shapes import SHAPE_ERRORS, infer_vae, layout_facts, unreadable_architecture
from ldm.formats.sdxl_single_file import big_g_encoder, big_g_original, sdxl_unet_config
from ldm.models.autoencoder import build_vae
from ldm.models.components import Components
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import HFClipTextEncoder
from ldm.models.weights import ModelError, load_state, read_safetensors

REFINER_PREFIX = "conditioner.embedders.0.model."  # a refiner's only text encoder: OpenCLIP bigG
REFINER_TIME_IDS = 5  # original height and width, crop top and left, aesthetic score


def is_sdxl_refiner_state(state) -> bool:
    """Whether original-layout keys (a state dict or just its keys) are an SDXL refiner's."""
    return any(k.startswith(REFINER_PREFIX) for k in state)


def is_sdxl_refiner_file(path: Path) -> bool:
    """Whether a .safetensors file is an SDXL refiner's, from its header alone."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return is_sdxl_refiner_state(handle.keys())
    except (SafetensorError, OSError):
        return False


def load_refiner_file(path: Path) -> Components:
    """An SDXL refiner's single file; ModelError in one line for any other file."""
    state = read_safetensors(path)
    if not is_sdxl_refiner_state(state):
        raise ModelError(f"{path} is not an SDXL refiner (a single file whose only text encoder is OpenCLIP bigG: {REFINER_PREFIX}*)")
    try:
        return refiner_components(state, path.stem)
    except SHAPE_ERRORS as error:
        raise unreadable_architecture(path, error) from None
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from None


def refiner_components(state: dict[str, torch.Tensor], name: str) -> Components:
    from diffusers import UNet2DConditionModel

    facts = layout_facts()["sdxl"]
    encoder = big_g_encoder(state, REFINER_PREFIX, facts)
    unet = UNet2DConditionModel(**sdxl_unet_config(state, facts, encoder.model.config.projection_dim, REFINER_TIME_IDS))
    load_state(unet, unet_from_original(state, unet.config), "U-Net")
    vae = build_vae(VAEConfig(**infer_vae(state, facts), sample_size=facts["vae_sample_size"]))
    load_state(vae, vae_from_original(state, vae.config), "VAE")
    return Components(
        vae=vae,
        conditioner=TextConditioner([encoder], zeros_for_empty_negative=facts["refiner_zeros_for_empty_prompt"]),
        denoiser=unet,
        scheduler_config=scheduler_config(SchedulerConfig(**facts["scheduler"])),
        config=None,
        name=name,
    )


def is_refiner(components: Components) -> bool:
    """A refiner's parts: OpenCLIP bigG alone (projected, penultimate layer) before a text_time U-Net."""
    encoders = components.text_encoders
    return (
        len(encoders) == 1
        and isinstance(encoders[0], HFClipTextEncoder)
        and encoders[0].layer == "penultimate"
        and hasattr(encoders[0].model, "text_projection")
        and getattr(components.denoiser.config, "addition_embed_type", None) == "text_time"
    )


def refiner_original_state(components: Components) -> dict[str, torch.Tensor]:
    """A refiner's weights under their original names."""
    state = unet_to_original(components.denoiser.state_dict(), components.denoiser.config)
    state.update(vae_to_original(components.vae.state_dict(), components.vae.config))
    state.update(big_g_original(components.first_text_encoder.model, REFINER_PREFIX))
    return state
