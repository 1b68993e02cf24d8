"""Where ldm-convert may write, checked before anything is read or written: never into, over
or around what it reads (SRC, the folder SRC shares parts with, the LoRAs it merges), and over
an existing DST only when asked (--overwrite), and then only a file or a diffusers folder."""

from __future__ import annotations

from pathlib import Path

from ldm.cli.common import UsageError
from ldm.formats.diffusers_export import is_diffusers_folder
from ldm.formats.model_folder import CONFIG_FILE, ModelError, parts_source

SINGLE_FILE_SUFFIX = ".safetensors"


def check_target(source: Path, target: Path, loras: list[Path], overwrite: bool) -> None:
    """UsageError, one line, when writing `target` would change what the conversion reads or
    replace something the user did not ask to replace."""
    for read, what in _read_paths(source, loras):
        for written in _written_paths(target):
            if written == read:
                raise UsageError(f"DST {target} is {what}" if what != "SRC" else "SRC and DST are the same path")
            if written.is_relative_to(read):
                raise UsageError(f"DST {target} is inside {what}, which this conversion reads; write elsewhere")
            if read.is_relative_to(written):
                raise UsageError(f"{what} is inside DST {target}, which writing DST would replace")
    if target.exists() or target.is_symlink():
        _check_replaceable(target, overwrite)


def _read_paths(source: Path, loras: list[Path]) -> list[tuple[Path, str]]:
    """Everything the conversion reads, resolved (symlinks followed), with its name in messages."""
    paths = [(_resolved(source), "SRC")]
    if (source / CONFIG_FILE).is_file():
        try:
            shared = parts_source(source)  # where a slim folder reads the weights it leaves out
        except ModelError as error:
            raise UsageError(str(error)) from None
        if shared is not None:
            paths.append((shared, f"{shared} (SRC's parts_from)"))
    paths += [(_resolved(lora), f"the LoRA {lora}") for lora in loras]
    return paths


def _written_paths(target: Path) -> list[Path]:
    """The name the write replaces (a symlink DST is itself replaced) and where it points."""
    return [_resolved(target.parent) / target.name, _resolved(target)]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop, before Python 3.13
        raise UsageError(f"cannot follow the symlinks of {path}: {error}") from None


def _check_replaceable(target: Path, overwrite: bool) -> None:
    as_file = target.suffix.lower() == SINGLE_FILE_SUFFIX
    if as_file and target.is_dir():
        raise UsageError(f"{target} is a folder; a DST ending in {SINGLE_FILE_SUFFIX} is one file")
    if not as_file and not is_diffusers_folder(target):
        raise UsageError(f"{target} exists and is not a diffusers model folder; not replacing it")
    if not overwrite:
        raise UsageError(f"{target} exists; add --overwrite to replace it")
