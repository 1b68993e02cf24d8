"""Stage `clip`: contrastive image-text training of an open_clip CLIP (open_clip's own
ClipLoss), for domains with no pretrained CLIP. The text tower is built from
model.text_encoder and exported as the text encoder of the text2img stage; the image
tower (clip: section) is only a training partner and is not exported."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm.formats.model_folder import load_state, save_component
from ldm.models.text_encoder import OpenClipTextEncoder, resolve_arch
from ldm.training.stages import Stage, StageContext

# open_clip's normalisation of [0, 1] pixels (OpenAI CLIP's dataset statistics).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clip(config):
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    text = resolve_arch(config.model.text_encoder)
    vision = config.clip
    return open_clip.CLIP(
        embed_dim=text.embed_dim,
        vision_cfg=CLIPVisionCfg(
            layers=vision.vision_layers,
            width=vision.vision_width,
            head_width=vision.vision_head_width,
            patch_size=vision.patch_size,
            image_size=vision.image_size,
        ),
        # Same settings as ldm.models.text_encoder's TextTransformer, so the weights move over.
        text_cfg=CLIPTextCfg(
            context_length=text.context_length,
            vocab_size=text.vocab_size,
            width=text.width,
            heads=text.heads,
            layers=text.layers,
            mlp_ratio=text.mlp_ratio,
        ),
    )


def text_tower_state(clip) -> dict[str, torch.Tensor]:
    """A non-custom-text open_clip CLIP keeps its text tower at top level, under the names
    TextTransformer uses; everything else is the image tower or the logit scale."""
    return {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.") and not k.startswith("logit_")}


class ClipModule(nn.Module):
    def __init__(self, clip, tokenizer, image_size: int, rank: int, world_size: int):
        super().__init__()
        import open_clip

        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        # gather_with_grad: every process contrasts against the global batch, and its
        # gradients equal those of one process holding the whole batch.
        self.loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=rank, world_size=world_size)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.mean.device)
        if pixels.shape[-1] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return ((pixels + 1) / 2 - self.mean) / self.std  # (B, 3, S, S)

    def forward(self, batch: dict, randomness, step: int):
        tokens = self.tokenizer(list(batch["caption"])).to(self.mean.device)
        image_features, text_features, logit_scale = self.clip(self.images(batch["pixels"]), tokens)
        loss = self.loss_fn(image_features, text_features, logit_scale)
        return loss, {"loss": loss.detach(), "logit_scale": logit_scale.detach()}


class ClipStage(Stage):
    def __init__(self, context: StageContext):
        from open_clip.tokenizer import SimpleTokenizer

        super().__init__(context)
        self.clip = build_clip(self.config)
        tokenizer = SimpleTokenizer(context_length=self.config.model.text_encoder.context_length)
        self.module = ClipModule(self.clip, tokenizer, self.config.clip.image_size, context.rank, context.world_size)
        self.module.to(context.device).train()

    def export(self) -> Path:
        text_config = self.config.model.text_encoder
        encoder = OpenClipTextEncoder(text_config)
        load_state(encoder.tower, text_tower_state(self.clip), "CLIP text tower")
        return save_component(encoder, "text_encoder", text_config, self.context.output_dir / "text_encoder")
