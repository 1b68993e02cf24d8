"""How many processes (GPUs) a run will have, for the dry run's global batch: the dry run is
usually started alone (`ldm-train --dry-run`), before `accelerate launch` decides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

import yaml


class ProcessCount(NamedTuple):
    count: int
    source: str  # where the count came from, said beside it


def accelerate_config_file() -> Path:
    """accelerate's default config (what `accelerate config` writes and `accelerate launch` reads)."""
    from accelerate.commands.config.config_args import default_config_file

    return Path(default_config_file)


def from_accelerate_config(path: Path) -> Optional[int]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    count = data.get("num_processes") if isinstance(data, dict) else None
    return count if isinstance(count, int) and count > 0 else None


def planned_processes(requested: Optional[int] = None, environ=os.environ, config_file: Optional[Path] = None) -> ProcessCount:
    """--num-processes, else WORLD_SIZE (the dry run launched by accelerate/torchrun), else the
    accelerate config's num_processes, else one."""
    if requested:
        return ProcessCount(requested, "--num-processes")
    if environ.get("WORLD_SIZE", "").isdigit() and int(environ["WORLD_SIZE"]) > 0:
        return ProcessCount(int(environ["WORLD_SIZE"]), "WORLD_SIZE")
    path = config_file or accelerate_config_file()
    count = from_accelerate_config(path)
    if count is not None:
        return ProcessCount(count, f"num_processes in {path}")
    return ProcessCount(1, "no accelerate config; --num-processes N to plan for N GPUs")


def global_batch_line(processes: ProcessCount, batch_size: int, grad_accum: int) -> str:
    total = batch_size * grad_accum * processes.count
    return (
        f"processes (GPUs): {processes.count} ({processes.source}); global batch {total} = "
        f"{batch_size} per device x {grad_accum} accumulation step{'s' if grad_accum > 1 else ''} x {processes.count}"
    )
