"""Weight tensors on disk: safetensors only, pickles refused, strict loading into modules.

The lowest layer that touches weight files, so that model builders (the text encoder's
pretrained tower) and model folders share one reader without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


class ModelError(Exception):
    """A model path that cannot be loaded or saved; the message says why in one line."""


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


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # Contiguous, unshared copies: safetensors refuses views that share storage.
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ModelError(f"{what} weights do not fit its config: {first}") from None
