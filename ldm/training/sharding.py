"""Training sharded across processes: what accelerate was launched with, what is refused under
it (at start, one line each), and where the loop gathers or scatters shards.

FSDP2 (torch's fully_shard, accelerate's `fsdp_version: 2`) is supported for the stages that
train a denoiser or a part beside a frozen one (LoRA adapters, a ControlNet), and lcm (its EMA
target network sharded beside the student). The module is sharded first (its frozen parameters
too); the optimizer and EMA are then built over its sharded trained parameters, so each process
keeps only its shard of weights, gradients, AdamW states and EMA shadows. Checkpoints stay ldm's own (safetensors + JSON, no pickle, written by the main
process): the trained weights, the optimizer state and the EMA are gathered to full tensors
(torch.distributed.checkpoint.state_dict, full_state_dict + cpu_offload) in the layout an
unsharded run writes, so a checkpoint resumes under FSDP or DDP alike. Validation and the export
run on the main process on an unsharded copy of the stage holding the gathered weights.

DeepSpeed is refused: it steps the optimizer inside backward (before the loop can skip a
non-finite step) and keeps the fp32 master weights in partitions that only its own pickled
checkpoints hold, so ldm could neither skip steps nor resume exactly."""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch
from torch.distributed.fsdp import CPUOffloadPolicy

from ldm.config import ConfigError

# Stages whose module registers the trained denoiser (text2img, inpaint, upscaler), or a trained
# part beside a frozen model that is sharded with it: LoRA adapters (U-Net and text encoder) and a
# ControlNet beside its U-Net (fully_shard takes blocks that mix frozen and trained parameters).
# lcm: its EMA target network is a frozen submodule sharded like the student, and follows it
# shard by shard; the frozen teacher stays whole on every process, as the VAE and text encoder do.
SHARDED_STAGES = ("text2img", "inpaint", "upscaler", "lora", "controlnet", "lcm")
# Why the others are refused (the rest: not a denoiser stage).
NOT_SHARDED: dict[str, str] = {}
FSDP_CONFIG = "docs/accelerate/fsdp2.yaml"


def sharding_of(accelerator) -> str:
    """'fsdp', 'deepspeed' or '' (whole copies: one process or DDP)."""
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    return {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}.get(kind, "")


def check_sharding(config, accelerator) -> None:
    """One line for what cannot train sharded, before any model is built."""
    kind = sharding_of(accelerator)
    if kind == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"accelerate is configured for DeepSpeed, which is not installed; use FSDP instead ({FSDP_CONFIG})")
        raise ConfigError(
            "DeepSpeed is not supported: it steps the optimizer inside backward (no skipping of non-finite steps) and "
            f"keeps its fp32 master weights where ldm's safetensors checkpoints cannot resume them; use FSDP ({FSDP_CONFIG})"
        )
    if kind != "fsdp":
        return
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise ConfigError(f"FSDP version {plugin.fsdp_version} is not supported: set fsdp_version: 2 in the accelerate config ({FSDP_CONFIG})")
    if config.stage not in SHARDED_STAGES:
        reason = NOT_SHARDED.get(config.stage, f"only {', '.join(SHARDED_STAGES)} do")
        raise ConfigError(f"stage {config.stage} does not train under FSDP ({reason}); launch it without FSDP")
    if config.stage == "lora" and config.lora.tokens:
        raise ConfigError("lora.tokens (learned token embeddings) is not tested under FSDP yet: launch it without FSDP")
    if isinstance(plugin.cpu_offload, CPUOffloadPolicy):
        raise ConfigError("FSDP with fsdp_offload_params is not supported yet: set fsdp_offload_params: false")
    if config.train.compile:
        raise ConfigError("train.compile is not supported under FSDP yet: set train.compile false")


def grad_norm_is_finite(grad_norm: Optional[torch.Tensor]) -> bool:
    """A gradient norm the accelerator could not tell (None) says nothing against the step."""
    return grad_norm is None or bool(torch.isfinite(grad_norm))
