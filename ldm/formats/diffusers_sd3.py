"""SD3 diffusers folders (StableDiffusion3Pipeline's layout): the text side of two CLIPs and
an optional T5, and what the loader needs to know about the folder.

text_encoder (CLIP ViT-L) and text_encoder_2 (OpenCLIP bigG) are both CLIPTextModelWithProjection:
their penultimate layers, side by side along the width (768 + 1280), are zero-padded to the
MMDiT's joint width (T5's, 4096) and followed along the sequence by T5's last hidden states
(text_encoder_3, 256 tokens); without a T5 (diffusers lets a folder leave it out) those 256
tokens are zeros. A long prompt (A1111's syntax) gives the CLIPs 75-token chunks side by side
along the sequence, as A1111 chunks them, the pooled vector the first chunk's; T5 reads the
whole prompt in its own 256 tokens (BREAK dropped, cut after 255 as diffusers cuts it). The pooled vector is both CLIPs' pooled projections side by side. An empty
negative prompt is encoded as it is (SD3 has no force_zeros_for_empty_prompt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from ldm.diffusion.conditioning import Conditioning
from ldm.formats.diffusers_sdxl import SECOND_ENCODER, projected_clip
from ldm.models.t5_encoder import HFT5TextEncoder
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import TextEncoding
from ldm.models.weights import ModelError

CLIP_FOLDERS = (("text_encoder", "tokenizer"), SECOND_ENCODER)
T5_FOLDERS = ("text_encoder_3", "tokenizer_3")
T5_TOKENS = 256  # diffusers' max_sequence_length: T5's share of the context, zeros without a T5


def _index(path: Path) -> dict:
    return json.loads((path / "model_index.json").read_text())


def is_sd3_folder(path: Path) -> bool:
    """Whether model_index.json names one of diffusers' Stable Diffusion 3 pipelines."""
    return str(_index(path).get("_class_name", "")).startswith("StableDiffusion3")


def has_t5(path: Path) -> bool:
    """Whether the folder's model_index.json names a T5 encoder (diffusers writes [null, null] without one)."""
    entry = _index(path).get(T5_FOLDERS[0])
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def sd3_text_folders(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The text encoder and tokenizer subfolders an SD3 folder needs (T5's only where named)."""
    folders = CLIP_FOLDERS + ((T5_FOLDERS,) if has_t5(path) else ())
    return tuple(encoder for encoder, _ in folders), tuple(tokenizer for _, tokenizer in folders)


class JointContext:
    """SD3's combine: the CLIPs' contexts (one or more 77-token chunks) side by side, zero-padded
    to the joint width, then T5's tokens (or T5_TOKENS zeros) after them; both CLIPs' pooled
    vectors side by side."""

    def __init__(self, joint_width: int):
        self.joint_width = joint_width

    def __call__(self, encodings: Sequence[TextEncoding]) -> Conditioning:
        clips, t5 = encodings[:2], encodings[2:]
        clip = torch.cat([encoding.hidden for encoding in clips], dim=-1)  # (B, L, 768 + 1280)
        clip = torch.nn.functional.pad(clip, (0, self.joint_width - clip.shape[-1]))  # (B, L, joint width)
        late = t5[0].hidden if t5 else clip.new_zeros(len(clip), T5_TOKENS, self.joint_width)
        pooled = torch.cat([encoding.pooled for encoding in clips], dim=-1)  # (B, P1 + P2)
        return Conditioning(torch.cat([clip, late.to(clip.dtype)], dim=1), pooled=pooled)


def sd3_text_side(path: Path, joint_width: int, **options) -> TextConditioner:
    """The text side of an SD3 folder whose MMDiT reads `joint_width`-wide tokens."""
    encoders = [projected_clip(path, folders, **options) for folders in CLIP_FOLDERS]
    clip_width = sum(encoder.width for encoder in encoders)
    if clip_width > joint_width:
        raise ModelError(f"{path}: the CLIP encoders are {clip_width} wide together, wider than the MMDiT's joint width {joint_width}")
    if has_t5(path):
        encoders.append(_t5(path, joint_width, **options))
    return TextConditioner(encoders, JointContext(joint_width))


def _t5(path: Path, joint_width: int, **options) -> HFT5TextEncoder:
    from transformers import AutoTokenizer, T5EncoderModel

    model = T5EncoderModel.from_pretrained(path / T5_FOLDERS[0], **options)
    if model.config.d_model != joint_width:
        raise ModelError(f"{path / T5_FOLDERS[0]} is {model.config.d_model} wide; the MMDiT reads {joint_width}-wide tokens")
    tokenizer = AutoTokenizer.from_pretrained(path / T5_FOLDERS[1], local_files_only=True)
    return HFT5TextEncoder(model, tokenizer, T5_TOKENS)


def check_flow_scheduler(path: Path, scheduler_config: dict) -> None:
    """SD3's schedule is FlowMatchEulerDiscreteScheduler's with a fixed shift; the
    resolution-dependent (dynamic) shift is not yet supported."""
    if scheduler_config.get("use_dynamic_shifting"):
        raise ModelError(f"{path}: the scheduler's use_dynamic_shifting (a shift per resolution) is not yet supported")
