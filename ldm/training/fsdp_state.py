"""FSDP2's shards <-> the whole tensors of ldm's checkpoints and exports.

Each process holds a shard (a DTensor) of every parameter, of its gradient, of the AdamW states
and of the EMA shadows. Checkpoints hold whole tensors, in the layout an unsharded run writes
(the optimizer state keyed by parameter position, as torch's optimizer.state_dict()), so either
kind of run resumes the other's. Every function here that gathers or scatters is collective:
all processes call it, in the same order; whole tensors land on the main process's CPU only."""

from __future__ import annotations

from typing import Optional

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors on the main process's CPU
SCATTER = StateDictOptions(full_state_dict=True, strict=False)  # every process slices its shard from whole tensors


def shard_module(accelerator, module: torch.nn.Module) -> tuple[torch.nn.Module, list]:
    """Shards `module` in place (accelerate's fully_shard, with the launch config's wrap policy);
    returns it and its trained parameters, now shards, for the optimizer and EMA to be built on."""
    # TRANSFORMER_BASED_WRAP without class names shards the root's `_no_split_modules` one by
    # one: the stage's module wraps diffusers models, which name their blocks (ResnetBlock2D,
    # BasicTransformerBlock, ...); size-based wrapping would hit their ModuleLists, which
    # fully_shard refuses.
    module._no_split_modules = sorted({name for part in module.modules() for name in getattr(part, "_no_split_modules", None) or ()})
    module = accelerator.prepare(module)
    return module, [p for p in module.parameters() if p.requires_grad]


def parameter_names(module: torch.nn.Module, parameters: list) -> list[str]:
    names = {id(p): name for name, p in module.named_parameters()}
    return [names[id(p)] for p in parameters]


def gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Collective for a shard: the whole tensor, on the CPU."""
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu()


def gather_weights(module: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The trained parameters `names`, whole (main process; empty elsewhere)."""
    whole = get_model_state_dict(module, options=GATHER)
    return {name: whole[name] for name in names if name in whole}


def gather_optimizer_state(module: torch.nn.Module, optimizer, names: list[str]) -> dict:
    """The optimizer state, whole and keyed by position (main process; empty elsewhere)."""
    whole = get_optimizer_state_dict(module, optimizer, options=GATHER)
    return by_position(whole, names) if whole else {}


def gather_ema_state(ema) -> dict:
    """EMAModel.state_dict() with whole shadows (on every process: only the main one keeps it)."""
    state = ema.state_dict()
    return {**state, "shadow_params": [gather_tensor(s) for s in state["shadow_params"]]}


def by_position(state: dict, names: list[str]) -> dict:
    """{"state": {name: ...}, "param_groups": [{"params": [name...]}]} -> torch's position keys."""
    position = {name: i for i, name in enumerate(names)}
    return {
        "state": {position[name]: value for name, value in state["state"].items()},
        "param_groups": [{**group, "params": [position[n] for n in group["params"]]} for group in state["param_groups"]],
    }


def by_name(state: dict, names: list[str]) -> dict:
    """torch's position keys -> parameter names (what set_optimizer_state_dict reads)."""
    return {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]} for group in state["param_groups"]],
    }


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Whole trained weights (the same on every process) into the shards."""
    set_model_state_dict(module, weights, options=SCATTER)


def load_optimizer_state(module: torch.nn.Module, optimizer, saved: dict, names: list[str]) -> None:
    set_optimizer_state_dict(module, optimizer, by_name(saved, names), options=SCATTER)


def shard_like(whole: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    if not isinstance(parameter, DTensor):
        return whole.to(parameter.device)
    local = parameter.to_local()
    return distribute_tensor(whole.to(local.device, local.dtype), parameter.device_mesh, parameter.placements)


def shard_ema(ema, parameters: list) -> None:
    """After EMAModel.load_state_dict of whole shadows: each process keeps its shards."""
    ema.shadow_params = [shard_like(s, p) for s, p in zip(ema.shadow_params, parameters)]


def export_weights(module: torch.nn.Module, parameters: list, ema: Optional[object]) -> dict[str, torch.Tensor]:
    """What the export holds, whole: the EMA shadows when there is an EMA, else the trained weights."""
    names = parameter_names(module, parameters)
    if ema is None:
        return gather_weights(module, names)
    return dict(zip(names, (gather_tensor(s) for s in ema.shadow_params)))
