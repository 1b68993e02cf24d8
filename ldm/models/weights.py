"""Weight tensors on disk: safetensors only, pickles refused (but for the tensors-only reader
textual-inversion files need), strict loading into modules.

The lowest layer that touches weight files, so that model builders (the text encoder's
pretrained tower) and model folders share one reader without importing each other.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ldm.errors import LdmError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


class ModelError(LdmError):
    """A model path that cannot be loaded or saved; the message says why in one line."""


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers (5.x) draws a "Loading weights" bar for every model it reads: a command's
    --quiet and its one-line errors must not get them. Put back as it was after."""
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(
            f"{path} is a pickled checkpoint; refused because unpickling can run arbitrary code. "
            "Convert it to .safetensors with a tool you trust."
        )


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path} is not a readable safetensors file ({error})") from None


def read_tensor_pickle(path: str | Path):
    """A .pt/.bin file holding only tensors and plain values (AUTOMATIC1111's textual-inversion
    files), read by torch's weights-only unpickler: a file that would build any other object
    or call anything is refused, one line, before any of its code runs."""
    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # the unpickler's refusal, or a damaged file: whatever the bytes provoke
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line), None) or f"{type(error).__name__}: {(lines or [''])[0][:120]}"
        raise ModelError(f"{path} is refused: not a tensors-only file, and unpickling anything else could run code ({why})") from None


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # Contiguous, unshared copies: safetensors refuses views that share storage.
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))


def stored_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file holds, from its header: no tensor is read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path} is not a readable safetensors file ({error})") from None


def check_fits(module: torch.nn.Module, found: dict[str, tuple[int, ...]], what: str, config_file: str, weights_file: str) -> None:
    """Refuses, in one line, weights that cannot fill `module`; works on a `meta` module, so a
    config describing terabytes is refused before anything is allocated. The weights file is
    a hard bound: a module needing more values than it stores cannot be filled from it."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    needed = sum(math.prod(shape) for shape in expected.values())
    held = sum(math.prod(shape) for shape in found.values())
    size = f"{config_file} describes {needed:.3g} weights ({needed * 4 / 2**30:,.1f} GiB in float32) but {weights_file} holds {held:,}"
    # Tensors the file has, at the config's shapes, already need more than it holds: too wide.
    if sum(math.prod(shape) for key, shape in expected.items() if key in found) > held:
        raise ModelError(f"{what} weights do not fit its config: {size}; check the sizes in {config_file}")
    missing = [key for key in expected if key not in found]
    if missing:
        # Too deep (or a tensor lost): say how much the config asks for when it is more.
        detail = f" ({size})" if needed > held else ""
        raise ModelError(f"{what} weights do not fit its config: {missing[0]} is missing from {weights_file}{detail}")
    for key, shape in expected.items():
        if found[key] != shape:
            raise ModelError(
                f"{what} weights do not fit its config: {key} has shape {found[key]} in {weights_file}, {config_file} expects {shape}"
            )
    unexpected = [key for key in found if key not in expected]
    if unexpected:
        raise ModelError(f"{what} weights do not fit its config: {weights_file} has {unexpected[0]}, which the config does not")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    check_fits(module, {key: tuple(value.shape) for key, value in state.items()}, what, "the config", "the weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ModelError(f"{what} weights do not fit its config: {first}") from None
