"""An SDXL-shaped model built from a model config (`model.sdxl`): the text side of two
transformers CLIP text models, as an SDXL diffusers folder holds them, and what its U-Net
needs beyond a Stable Diffusion U-Net's (the `text_time` embedding of pooled text and sizes).

Built fresh, such a model is the same Components an SDXL folder loads into, so sampling,
LoRA, ControlNet and the exports treat both alike."""

from __future__ import annotations

from ldm.config import ClipTextConfig, ModelConfig, SDXLConfig
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.text_conditioner import TextConditioner, concatenated
from ldm.models.text_encoder import HFClipTextEncoder

SIZE_IDS = 6  # original height and width, crop top and left, target height and width
# SDXL's tokenizers: the first pads with the end mark (OpenAI CLIP's), the second with "!" (open_clip's id 0).
PAD_TOKENS = ("<|endoftext|>", "!")


def build_sdxl_text_side(sdxl: SDXLConfig) -> TextConditioner:
    """Fresh (random) text encoders, each read at its penultimate layer, concatenated."""
    encoders = []
    for config, pad in zip((sdxl.text_encoder, sdxl.text_encoder_2), PAD_TOKENS):
        tokenizer = clip_tokenizer(config.context_length, pad_token=pad)
        encoders.append(HFClipTextEncoder(clip_text_model(config, tokenizer), tokenizer, layer="penultimate"))
    return TextConditioner(encoders, concatenated, zeros_for_empty_negative=sdxl.zeros_for_empty_prompt)


def clip_text_model(config: ClipTextConfig, tokenizer):
    """A random CLIPTextModel, or CLIPTextModelWithProjection when the config has a projection."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    settings = CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.width, intermediate_size=config.mlp_width,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, max_position_embeddings=config.context_length,
        hidden_act=config.activation, projection_dim=config.projection_dim or config.width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model_class = CLIPTextModel if config.projection_dim is None else CLIPTextModelWithProjection
    return model_class(settings)


def sdxl_text_width(sdxl: SDXLConfig) -> int:
    """The cross-attention width: both encoders' hidden states side by side (768 + 1280 = 2048)."""
    return sdxl.text_encoder.width + sdxl.text_encoder_2.width


def sdxl_unet_options(config: ModelConfig) -> dict:
    """UNet2DConditionModel's arguments for the size conditioning: six sinusoidal size
    embeddings and the second encoder's pooled projection, projected into the time embedding."""
    sdxl = config.sdxl
    return {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": sdxl.time_embed_dim,
        "projection_class_embeddings_input_dim": SIZE_IDS * sdxl.time_embed_dim + sdxl.text_encoder_2.projection_dim,
    }
