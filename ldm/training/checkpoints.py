"""Training checkpoints: everything `--resume` needs, in safetensors and JSON only.

    OUTPUT/checkpoints/step-000100/
        weights.safetensors     the trained parameters (by name)
        ema.safetensors         EMA shadow parameters (when EMA is on)
        optimizer.safetensors   optimizer state tensors, flattened to "state.<param>.<name>"
        rng.safetensors         torch CPU (and CUDA) RNG states (uint8 tensors)
        stage.safetensors       tensors the stage keeps besides its weights (lcm's target network)
        trainer.json            step, data position (each process's, for a stream), LR schedule, optimizer/EMA scalars,
                                python/numpy RNG states, run counters
    OUTPUT/checkpoints/latest   the name of the newest complete checkpoint

accelerate's save_state pickles optimizer, scheduler and RNG state; unpickling runs code
from the file, so none of it is used. A checkpoint folder is written under a temporary
name and renamed when complete (ldm.files: a step saved again keeps its old folder reachable
until the new one is whole), and `latest` is replaced only after that: a process killed at
any moment leaves `latest` naming a checkpoint that loads, once the next start has recovered
the leftovers (clean_run_leftovers). Resuming from a checkpoint points `latest` at it, so a
later `--resume latest` continues that branch, not the abandoned newer one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ldm.errors import LdmError
from ldm.files import clean_leftovers, recover_folder, replacing_folder, write_file_atomic
from ldm.formats.model_folder import ModelError, read_safetensors, write_safetensors

LATEST = "latest"
TRAINER_FILE = "trainer.json"
REQUIRED_FILES = (TRAINER_FILE, "weights.safetensors", "optimizer.safetensors", "rng.safetensors")


class CheckpointError(LdmError):
    """A resume path that is not a usable checkpoint; one line saying why."""


@dataclass
class TrainingState:
    """What a checkpoint holds, in memory."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer.state_dict()
    lr_scheduler: dict  # torch LR scheduler state_dict() (plain numbers and lists)
    data_position: dict  # ldm.training.data_positions.saved_data_position()
    ema: Optional[dict] = None  # diffusers EMAModel.state_dict()
    counters: dict = field(default_factory=dict)  # e.g. skipped steps
    rng: dict = field(default_factory=dict)  # capture_rng()
    stage_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # Stage.state_tensors()


# ----------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_to_files(state: dict) -> tuple[dict, dict]:
    tensors = {"torch": state["torch"]}
    for i, cuda in enumerate(state.get("cuda", [])):
        tensors[f"cuda.{i}"] = cuda
    name, keys, pos, has_gauss, cached = state["numpy"]
    plain = {"python": list(state["python"]), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, plain


def _rng_from_files(tensors: dict, plain: dict) -> dict:
    state = {"torch": tensors["torch"], **plain}
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda:
        state["cuda"] = [tensors[k] for k in cuda]
    return state


# ----------------------------------------------------------------------------- state dicts


def split_tensors(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replaces every tensor in a nested dict/list by a {"tensor": key} reference, putting
    the tensor in `tensors` under that key; what is left is JSON."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree
        return {"tensor": prefix}
    if isinstance(tree, dict):
        return {str(k): split_tensors(v, f"{prefix}.{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
    return tree


def join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"tensor"}:
            return tensors[tree["tensor"]]
        return {k: join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree


def optimizer_from_json(state: dict) -> dict:
    """JSON turned the integer parameter ids of optimizer state into strings; undo that."""
    return {
        "state": {int(k): v for k, v in state["state"].items()},
        "param_groups": state["param_groups"],
    }


# ----------------------------------------------------------------------------- writing


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def save_checkpoint(state: TrainingState, checkpoints_dir: Path, keep_last: int) -> Path:
    """Writes step-NNNNNN/ atomically, points `latest` at it, and prunes old ones."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(state.step)
    # The same step saved again (e.g. at the end) replaces its folder; `latest` may name
    # it, so the old one stays reachable until the new one is whole.
    with replacing_folder(final) as staging:
        _write_files(state, staging)
    _write_latest(checkpoints_dir, final.name)
    prune_checkpoints(checkpoints_dir, keep_last)
    return final


def _write_files(state: TrainingState, folder: Path) -> None:
    write_safetensors(state.weights, folder / "weights.safetensors")
    optimizer_tensors: dict[str, torch.Tensor] = {}
    optimizer_plain = split_tensors(state.optimizer, "optimizer", optimizer_tensors)
    write_safetensors(optimizer_tensors, folder / "optimizer.safetensors")
    ema_plain = None
    if state.ema is not None:
        ema_tensors: dict[str, torch.Tensor] = {}
        ema_plain = split_tensors(state.ema, "ema", ema_tensors)
        write_safetensors(ema_tensors, folder / "ema.safetensors")
    if state.stage_tensors:
        write_safetensors(state.stage_tensors, folder / "stage.safetensors")
    rng_tensors, rng_plain = _rng_to_files(state.rng or capture_rng())
    write_safetensors(rng_tensors, folder / "rng.safetensors")
    document = {
        "step": state.step,
        "data_position": state.data_position,
        "lr_scheduler": state.lr_scheduler,
        "optimizer": optimizer_plain,
        "ema": ema_plain,
        "counters": state.counters,
        "rng": rng_plain,
    }
    # Written last: a folder with trainer.json has all its other files.
    (folder / TRAINER_FILE).write_text(json.dumps(document))


def _write_latest(checkpoints_dir: Path, name: str) -> None:
    write_file_atomic(checkpoints_dir / LATEST, name + "\n")


def point_latest_at(checkpoints_dir: Path, checkpoint: Path) -> None:
    """Called on resume: `latest` names the checkpoint the run continues from (by name when
    it is in `checkpoints_dir`, else by absolute path), so a crash before the next save
    cannot leave `--resume latest` on an abandoned branch. Newer checkpoints of that branch
    stay on disk (prune spares them) until this run saves the same steps again."""
    inside = checkpoint.resolve().parent == checkpoints_dir.resolve()
    pointer = checkpoint.name if inside else str(checkpoint.resolve())
    if _latest_pointer(checkpoints_dir) != pointer:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        _write_latest(checkpoints_dir, pointer)


def _latest_pointer(checkpoints_dir: Path) -> Optional[str]:
    pointer = checkpoints_dir / LATEST
    return pointer.read_text().strip() if pointer.is_file() else None


def _step_of(name: str) -> Optional[int]:
    number = name.removeprefix("step-")
    return int(number) if name.startswith("step-") and number.isdigit() else None


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> None:
    """Keeps the newest `keep_last` checkpoints up to the one `latest` names (and that one);
    newer ones are an abandoned branch a resume went back from, replaced when this run gets
    there. Leftovers of interrupted writes are removed."""
    latest = _latest_pointer(checkpoints_dir)
    latest_step = _step_of(latest) if latest is not None else None
    complete = sorted(p for p in checkpoints_dir.glob("step-*") if p.is_dir() and _step_of(p.name) is not None)
    if latest_step is not None:
        complete = [p for p in complete if _step_of(p.name) <= latest_step]
    for old in complete[:-keep_last]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)
    clean_leftovers(checkpoints_dir)


def clean_run_leftovers(output_dir: Path) -> list[Path]:
    """At the start of a run: recovers the folders a killed replace left aside (a checkpoint
    saved again, the exported model) and removes stale temporary files and folders."""
    return clean_leftovers(output_dir) + clean_leftovers(output_dir / "checkpoints")


# ----------------------------------------------------------------------------- reading


def resolve_checkpoint(resume: str, output_dir: Path) -> Path:
    """`latest` (in OUTPUT/checkpoints) or a path -> a checkpoint folder that looks complete."""
    if resume == LATEST:
        checkpoints_dir = output_dir / "checkpoints"
        pointer = checkpoints_dir / LATEST
        if not pointer.is_file():
            raise CheckpointError(f"--resume latest: no checkpoint in {checkpoints_dir}")
        path = recover_folder(checkpoints_dir / pointer.read_text().strip())
    else:
        path = recover_folder(resume)
        if path.is_dir() and (path / "checkpoints" / LATEST).is_file():  # a run's output folder
            return resolve_checkpoint(LATEST, path)
    if not path.is_dir():
        raise CheckpointError(f"resume path {path} is not a checkpoint folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"resume path {path} is not a checkpoint: it has no {missing[0]}")
    return path


def load_checkpoint(path: Path) -> TrainingState:
    path = recover_folder(path)
    try:
        document = json.loads((path / TRAINER_FILE).read_text())
        weights = read_safetensors(path / "weights.safetensors")
        optimizer = join_tensors(document["optimizer"], read_safetensors(path / "optimizer.safetensors"))
        ema = None
        if document.get("ema") is not None:
            ema = join_tensors(document["ema"], read_safetensors(path / "ema.safetensors"))
        rng = _rng_from_files(read_safetensors(path / "rng.safetensors"), document["rng"])
        stage_file = path / "stage.safetensors"
        stage_tensors = read_safetensors(stage_file) if stage_file.is_file() else {}
    except (OSError, ValueError, KeyError, ModelError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from None
    return TrainingState(
        step=document["step"],
        weights=weights,
        optimizer=optimizer_from_json(optimizer),
        lr_scheduler=document["lr_scheduler"],
        data_position=document["data_position"],
        ema=ema,
        counters=document.get("counters", {}),
        rng=rng,
        stage_tensors=stage_tensors,
    )


def load_denoiser_from_checkpoint(path: Path, denoiser: torch.nn.Module) -> str:
    """Puts a text2img run's checkpoint into `denoiser` (built from the run's model config): the
    EMA weights when the run kept an EMA (what its export would hold), else the trained ones.
    Returns which ("ema" or "trained"). For evaluating a run at any of its checkpoints."""
    state = load_checkpoint(path)
    trained = {name.removeprefix("denoiser."): tensor for name, tensor in state.weights.items() if name.startswith("denoiser.")}
    named = list(denoiser.named_parameters())
    if set(trained) != {name for name, _ in named} or len(trained) != len(state.weights):
        raise CheckpointError(f"checkpoint {path} does not hold this model's denoiser (a text2img run of the same config)")
    if state.ema is not None:
        # The EMA keeps one shadow per trained parameter, in the module's parameter order.
        shadows = state.ema["shadow_params"]
        chosen = {name: shadow for (name, _), shadow in zip(named, shadows)}
    else:
        chosen = trained
    for name, parameter in named:
        if chosen[name].shape != parameter.shape:
            raise CheckpointError(f"checkpoint {path}: {name} is {tuple(chosen[name].shape)}, the model's {tuple(parameter.shape)}")
    with torch.no_grad():
        for name, parameter in named:
            parameter.copy_(chosen[name])
    return "ema" if state.ema is not None else "trained"
