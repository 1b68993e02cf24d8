"""How a run shards its training state over the GPUs, for the dry run's per-GPU memory.

From `--shard` (with --num-processes), else accelerate's launch environment (the dry run
started by `accelerate launch`), else accelerate's config file (`distributed_type: FSDP` with
fsdp_config's sharding strategy, `DEEPSPEED` with deepspeed_config's zero_stage), else none (DDP:
a full copy per GPU). What each strategy divides by the GPU count, at the step's peak (the
backward pass):

  fsdp    FSDP FULL_SHARD (FSDP2 reshard_after_forward true): weights, gradients, optimizer, EMA
  fsdp-grad-op  FSDP SHARD_GRAD_OP (FSDP2 reshard_after_forward false): the full weights stay
          gathered from the forward to the end of the backward; gradients, optimizer, EMA divided
  zero1   DeepSpeed ZeRO-1: optimizer states
  zero2   DeepSpeed ZeRO-2: optimizer states and gradients
  zero3   DeepSpeed ZeRO-3: weights, gradients, optimizer, EMA

EMA follows the weights it is built on (sharded weights: a sharded EMA). Only the trained
network is sharded: frozen ones are not wrapped and stay whole on every GPU."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import yaml

from ldm.training.process_count import accelerate_config_file

WEIGHTS, GRADIENTS, OPTIMIZER, EMA = "weights", "gradients", "optimizer", "EMA"
DIVIDED = {
    "none": frozenset(),
    "fsdp": frozenset({WEIGHTS, GRADIENTS, OPTIMIZER, EMA}),
    "fsdp-grad-op": frozenset({GRADIENTS, OPTIMIZER, EMA}),
    "zero1": frozenset({OPTIMIZER}),
    "zero2": frozenset({GRADIENTS, OPTIMIZER}),
    "zero3": frozenset({WEIGHTS, GRADIENTS, OPTIMIZER, EMA}),
}
SHARD_CHOICES = ("none", "fsdp", "fsdp-grad-op", "zero1", "zero2", "zero3")  # --shard
FSDP1_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")
FSDP_STRATEGY_SHARDING = {
    "FULL_SHARD": "fsdp",
    "SHARD_GRAD_OP": "fsdp-grad-op",
    "NO_SHARD": "none",
    "HYBRID_SHARD": "fsdp",  # within a machine; the group is the machine's processes
    "HYBRID_SHARD_ZERO2": "fsdp-grad-op",
}


class Sharding(NamedTuple):
    name: str  # a key of DIVIDED
    source: str  # where it came from, said beside it
    group: int | None = None  # GPUs one shard spans (hybrid: one machine's); None = all processes

    def divides(self, row: str) -> bool:
        return row in DIVIDED[self.name]


NO_SHARDING = Sharding("none", "no FSDP/DeepSpeed in accelerate's config: every GPU holds a full copy (DDP)")


def fsdp_sharding(value) -> str:
    """fsdp_reshard_after_forward / fsdp_sharding_strategy as accelerate's config writes them:
    a strategy name (FSDP1), a bool (FSDP2), or an old-style index 1..5; absent: FULL_SHARD."""
    if isinstance(value, bool):
        return "fsdp" if value else "fsdp-grad-op"
    if isinstance(value, int) and 1 <= value <= len(FSDP1_STRATEGIES):
        value = FSDP1_STRATEGIES[value - 1]
    text = str(value).strip().upper() if value is not None else "FULL_SHARD"
    if text in ("TRUE", "FALSE"):
        return "fsdp" if text == "TRUE" else "fsdp-grad-op"
    if text.isdigit():
        return fsdp_sharding(int(text))
    return FSDP_STRATEGY_SHARDING.get(text, "fsdp")


def zero_sharding(stage, config_file: str | None = None) -> str:
    """ZeRO stage from deepspeed_config's zero_stage, else its DeepSpeed JSON file."""
    if stage is None and config_file:
        try:
            stage = json.loads(Path(config_file).read_text()).get("zero_optimization", {}).get("stage")
        except (OSError, ValueError, AttributeError):
            stage = None
    try:
        stage = int(stage)
    except (TypeError, ValueError):
        stage = 0
    return f"zero{stage}" if stage in (1, 2, 3) else "none"


def hybrid_group(data: dict, strategy, processes: int) -> int | None:
    """HYBRID_SHARD shards within a machine: the group is one machine's processes."""
    machines = data.get("num_machines")
    if "HYBRID" in str(strategy).upper() and isinstance(machines, int) and machines > 1:
        return max(1, processes // machines)
    return None


def from_accelerate_config(path: Path, processes: int = 1) -> Sharding | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    kind = str(data.get("distributed_type", "")).upper()
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        value = fsdp.get("fsdp_reshard_after_forward", fsdp.get("fsdp_sharding_strategy"))
        described = value if value is not None else "FULL_SHARD"
        return Sharding(fsdp_sharding(value), f"distributed_type FSDP ({described}) in {path}", hybrid_group(data, value, processes))
    if kind == "DEEPSPEED":
        deepspeed = data.get("deepspeed_config") or {}
        name = zero_sharding(deepspeed.get("zero_stage"), deepspeed.get("deepspeed_config_file"))
        return Sharding(name, f"distributed_type DEEPSPEED ({name}) in {path}")
    return None


def from_launch_environment(environ) -> Sharding | None:
    """The variables `accelerate launch` sets for its processes."""
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        value = environ.get("FSDP_RESHARD_AFTER_FORWARD") or environ.get("FSDP_SHARDING_STRATEGY")
        return Sharding(fsdp_sharding(value), "ACCELERATE_USE_FSDP")
    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        name = zero_sharding(environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"), environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))
        return Sharding(name, "ACCELERATE_USE_DEEPSPEED")
    return None


def planned_sharding(requested: str | None = None, processes: int = 1, environ=os.environ, config_file: Path | None = None) -> Sharding:
    """--shard, else accelerate's launch environment, else its config file, else none."""
    if requested:
        return Sharding(requested, "--shard")
    found = from_launch_environment(environ)
    if found is None:
        found = from_accelerate_config(config_file or accelerate_config_file(), processes)
    return found or NO_SHARDING


def shard_line(sharding: Sharding, processes: int) -> str:
    group = sharding.group or processes
    if sharding.name == "none" or group <= 1:
        divided = "nothing divided" if sharding.name == "none" else f"{sharding.name}, but one GPU: nothing divided"
        return f"sharding: {divided} ({sharding.source})"
    rows = ", ".join(row for row in (WEIGHTS, GRADIENTS, OPTIMIZER, EMA) if sharding.divides(row))
    return f"sharding: {sharding.name} ({sharding.source}): {rows} of the trained network divided by {group}"
