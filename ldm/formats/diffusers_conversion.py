"""Any loadable model -> a diffusers-format Stable Diffusion folder, for tools that read those.

Our open_clip text tower becomes the transformers CLIPTextModel SD 2.x folders hold, through
the open_clip <-> transformers names SDXL's single files use too (ldm.formats.open_clip_layout);
"penultimate" models keep one layer fewer, as SD 2.x's
folders do. An SDXL model (two transformers CLIP text models: one read from a single file)
becomes a StableDiffusionXLPipeline folder, an SDXL refiner (read from its single file) a
refiner's StableDiffusionXLImg2ImgPipeline folder, an SD3 model (two CLIPs, maybe T5, an MMDiT) a
StableDiffusion3Pipeline folder. A model that came from a diffusers folder is that
folder with its U-Net replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ldm.diffusion.samplers import make_sampler
from ldm.formats.diffusers_export import is_diffusers_folder, save_diffusers_finetune
from ldm.formats.diffusers_sd3_export import save_sd3_folder
from ldm.formats.model_folder import ModelError, load_state, staged_folder
from ldm.formats.sd3_export import is_sd3_model
from ldm.formats.open_clip_layout import open_clip_to_transformers
from ldm.formats.sdxl_refiner_file import is_refiner
from ldm.formats.sdxl_single_file import sdxl_text_models
from ldm.formats.single_file import require_unet
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.components import Components


def save_as_diffusers(components: Components, path: str | Path, source: Path | None = None, changed: Iterable[str] = ()) -> Path:
    """`changed`: the Components parts that differ from `source`'s (merged LoRAs): a source
    diffusers folder is copied with its U-Net and those text encoders written anew."""
    path = Path(path)
    sd3 = is_sd3_model(components)
    if not sd3:
        require_unet(components, "a Stable Diffusion diffusers folder")
    if source is not None and is_diffusers_folder(source):
        modules = components.modules()
        encoders = {part: modules[part].model for part in changed if part.startswith("text_encoder")}  # HF CLIPs
        return save_diffusers_finetune(components.denoiser, source, path, encoders)
    if sd3:
        return save_sd3_folder(components, path)
    if len(components.text_encoders) > 1:
        return save_sdxl_folder(components, path)
    if is_refiner(components):
        return save_refiner_folder(components, path)
    if getattr(components.first_text_encoder, "tower", None) is None:
        raise ModelError("only models with an open_clip text tower (ours, SD 2.x) can be written as a new diffusers folder")
    from diffusers import StableDiffusionPipeline


    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=hf_text_model(components),
        tokenizer=clip_tokenizer(pad_token="!"),  # open_clip pads with id 0, which is "!"
        unet=components.denoiser,
        scheduler=make_sampler("ddim", components.scheduler_config).scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
    return path


def save_sdxl_folder(components: Components, path: Path) -> Path:
    """StableDiffusionXLPipeline's folder: both text models and tokenizers as they are, the
    model's schedule as SDXL's Euler scheduler."""
    from diffusers import StableDiffusionXLPipeline

    first, second = sdxl_text_models(components)
    tokenizers = [encoder.tokenizer for encoder in components.text_encoders]
    pipe = StableDiffusionXLPipeline(
        vae=components.vae,
        text_encoder=first,
        text_encoder_2=second,
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=components.denoiser,
        scheduler=make_sampler("euler", components.scheduler_config).scheduler,
        force_zeros_for_empty_prompt=components.conditioner.zeros_for_empty_negative,
    )
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
    return path


def save_refiner_folder(components: Components, path: Path) -> Path:
    """An SDXL refiner's folder (StableDiffusionXLImg2ImgPipeline's, as the refiner ships):
    text_encoder_2 and tokenizer_2 alone, a U-Net that reads the aesthetic score."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    encoder = components.first_text_encoder
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=components.vae,
        text_encoder=None,
        text_encoder_2=encoder.model,
        tokenizer=None,
        tokenizer_2=encoder.tokenizer,
        unet=components.denoiser,
        scheduler=make_sampler("euler", components.scheduler_config).scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=components.conditioner.zeros_for_empty_negative,
    )
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
    return path


def hf_text_model(components: Components):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = components.config.text_encoder
    used = config.layers - (1 if config.layer == "penultimate" else 0)
    tokenizer = clip_tokenizer()
    model = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.width,
            intermediate_size=int(config.width * config.mlp_ratio),
            num_hidden_layers=used,
            num_attention_heads=config.heads,
            max_position_embeddings=config.context_length,
            hidden_act="gelu",  # open_clip's text towers use exact GELU
            projection_dim=config.embed_dim,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=0,
        )
    )
    converted = open_clip_to_transformers(components.first_text_encoder.tower.state_dict())
    expected = model.state_dict().keys()
    weights = {}
    for key, value in converted.items():
        bare = key.removeprefix("text_model.")
        name = bare if bare in expected else f"text_model.{bare}"
        if name in expected:  # layers past the one used, and the projection, are not part of it
            weights[name] = value
    load_state(model, weights, "text encoder")
    return model.eval()
