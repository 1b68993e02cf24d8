"""Stage `lora`: low-rank adapters (peft) on a frozen text-to-image model's U-Net or MMDiT (and, with
lora.text_encoder, on its text encoder, both of SDXL's; with lora.tokens, the embeddings of new words), trained
as text2img trains the denoiser (same data, caption dropout, the model's objective: eps, v or
flow; min-SNR, latent cache), exported as one small LoRA file (kohya layout by default; on SDXL
under sd-scripts' names: the U-Net's original blocks, lora_te1_/lora_te2_; an MMDiT's in
diffusers' SD3 layout: ldm.lora.denoiser_targets) with its training facts in the metadata;
`ldm-generate --lora FILE` applies it to the base model. Validation grids show each prompt
without and with the LoRA (same seed)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ldm.diffusion.process import NoiseProcess
from ldm.lora.adapters import add_lora_adapters, lora_tensors, set_adapters_enabled, text_encoder_targets, write_lora_file
from ldm.lora.module_names import kohya_sdxl_unet_name
from ldm.lora.denoiser_targets import denoiser_lora
from ldm.lora.parameterisation import PREDICTION_KEY, prediction_type
from ldm.lora.token_embeddings import bundle_tensors
from ldm.models.components import Components
from ldm.training.learned_tokens import LearnedTokens
from ldm.training.size_conditioning import takes_time_ids
from ldm.training.text2img_stage import Text2ImgModule, Text2ImgStage
from ldm.training.validation import Grid, generate_options, sample_grid

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
SDXL_KOHYA_TEXT_PREFIXES = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}  # sd-scripts' SDXL names


class LoraModule(Text2ImgModule):
    """With adapters on the text encoder, it is a registered submodule (its adapters train,
    are checkpointed and synchronised); learned token rows are one too. Either way captions
    are encoded with gradients every step."""

    def __init__(self, components: Components, process: NoiseProcess, config):
        text2img = config.text2img
        super().__init__(components, process, config.data.caption_dropout, text2img.noise_offset, text2img.min_snr_gamma)
        self.train_text_encoder = config.lora.text_encoder
        if self.train_text_encoder:
            self.text_encoder = components.first_text_encoder
            if is_sdxl_model(components):  # SDXL's second encoder (OpenCLIP bigG) trains too, as kohya's sd-scripts does
                self.text_encoder_2 = components.text_encoders[1]
        self.tokens = LearnedTokens(components.first_text_encoder, config.lora.tokens) if config.lora.tokens else None
        self.text_trains = self.train_text_encoder or self.tokens is not None


def text_encoder_naming(encoder) -> dict:
    """An HF CLIPTextModel's adapters are named from inside our wrapper and under `text_model.`
    (kohya's lora_te_text_model_encoder_..., what AUTOMATIC1111 and ComfyUI read; newer
    transformers dropped that level, which ldm.lora.apply accepts either way)."""
    inner = getattr(encoder, "model", None)
    if inner is None:
        return {}
    has_level = any(name.startswith("text_model.") for name, _ in inner.named_modules())
    return {"within": "model.", "named_as": "" if has_level else "text_model."}


def is_sdxl_model(components: Components) -> bool:
    """Two CLIP text encoders before a denoiser that reads SDXL's size and crop ids."""
    return len(components.text_encoders) == 2 and takes_time_ids(components.denoiser)


def text_encoder_parts(components: Components) -> dict[str, nn.Module]:
    """The text encoders lora.text_encoder adapts, by Components part: the first, and SDXL's second."""
    encoders = components.text_encoders
    return {"text_encoder": encoders[0], **({"text_encoder_2": encoders[1]} if is_sdxl_model(components) else {})}


def adapter_tensors(components: Components, section, layout: str, alpha: float, denoiser_prefix: str = "") -> dict[str, torch.Tensor]:
    """The trained adapters as a LoRA file's tensors in `layout` (the stage's resolved one). kohya
    on SDXL: sd-scripts' names, the U-Net's original blocks (lora_unet_input_blocks_4_1_...) and
    lora_te1_ / lora_te2_; `denoiser_prefix`: an MMDiT's "transformer."."""
    sdxl_kohya = layout == "kohya" and is_sdxl_model(components)
    unet_name = kohya_sdxl_unet_name(components.denoiser) if sdxl_kohya else None
    tensors = lora_tensors(components.denoiser, "denoiser", layout, section.rank, alpha, prefix=denoiser_prefix, kohya_name=unet_name)
    if section.text_encoder:
        for part, encoder in text_encoder_parts(components).items():
            prefix = SDXL_KOHYA_TEXT_PREFIXES[part] if sdxl_kohya else ""
            tensors |= lora_tensors(encoder, part, layout, section.rank, alpha, prefix=prefix, **text_encoder_naming(encoder))
    return tensors


class LoraStage(Text2ImgStage):
    @property
    def alpha(self) -> float:
        section = self.config.lora
        return float(section.alpha if section.alpha is not None else section.rank)

    def load_components(self) -> Components:
        components = super().load_components()
        # Refused here, before any work (prior preservation's class images are drawn next):
        # a denoiser the stage cannot adapt, a layout it cannot write.
        self.denoiser_lora, self.layout = denoiser_lora(components.denoiser, self.config.lora.layout)
        return components

    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        config, section = self.config, self.config.lora
        targets = self.denoiser_lora.targets(components.denoiser, section.targets)
        add_lora_adapters(components.denoiser, section.rank, self.alpha, targets, config.train.seed)
        components.denoiser.to(self.context.device)
        if section.text_encoder:
            for offset, encoder in enumerate(text_encoder_parts(components).values(), start=1):
                add_lora_adapters(encoder, section.rank, self.alpha, text_encoder_targets(encoder), config.train.seed + offset)
                encoder.to(self.context.device)
        return LoraModule(components, process, config)

    def adapted(self) -> list[nn.Module]:
        """The parts that carry adapters."""
        encoders = list(text_encoder_parts(self.components).values()) if self.config.lora.text_encoder else []
        return [self.components.denoiser] + encoders

    def set_lora_enabled(self, enabled: bool) -> None:
        """The base model, exactly, when off: adapters and learned token rows."""
        for part in self.adapted():
            set_adapters_enabled(part, enabled)
        if self.module.tokens is not None:
            self.module.tokens.enabled = enabled

    @contextmanager
    def lora_off(self):
        """The base model inside, the LoRA back on after (whatever happened)."""
        self.set_lora_enabled(False)
        try:
            yield
        finally:
            self.set_lora_enabled(True)

    def evaluate(self, step: int) -> dict:
        """Two images per validation prompt, same seed: the base model, then with the LoRA."""
        options = generate_options(self.config.validation, self.components.scheduler_config)

        def row(pipeline, prompt: str, _) -> list:
            with self.lora_off():
                base = pipeline.generate(prompt, **options).images[0]
            return [base, pipeline.generate(prompt, **options).images[0]]

        return sample_grid(self.context, self.components, step, Grid(row, columns=2))

    def export(self) -> Path:
        config, section = self.config, self.config.lora
        layout, prefix = self.layout, self.denoiser_lora.peft_prefix if self.layout == "peft" else ""
        tensors = adapter_tensors(self.components, section, layout, self.alpha, denoiser_prefix=prefix)
        if self.module.tokens is not None:
            tensors |= bundle_tensors(self.module.tokens.vectors())
        metadata = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(section.rank),
            "ss_network_alpha": f"{self.alpha:g}",
            "ss_sd_model_name": str(section.init_from),
            "ss_output_name": section.name,
            "ss_steps": str(config.train.max_steps),
            "ldm_base_model": str(section.init_from),
            "ldm_trigger_words": ", ".join(dict.fromkeys(section.trigger_words + section.tokens)),
            "ldm_layout": layout,
            # What the LoRA was trained to predict (ldm.lora.parameterisation refuses a flow LoRA on an eps/v model).
            PREDICTION_KEY: prediction_type(self.components.scheduler_config),
            "ldm_training": {
                "lora": asdict(section), "train": asdict(config.train), "data": asdict(config.data), "text2img": asdict(config.text2img),
            },
        }
        path = self.context.output_dir / f"{section.name}.safetensors"
        return write_lora_file(tensors, path, metadata, DTYPES[section.dtype])
