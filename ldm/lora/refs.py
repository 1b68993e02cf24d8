"""How a request names its LoRAs, without loading them (no torch: --help stays instant):

    --lora style.safetensors:0.8          a file (or a NAME in --lora-dir) at a weight (default 1)
    "a lake <lora:style:0.5>"             AUTOMATIC1111's prompt tag: NAME.safetensors in --lora-dir,
                                          removed from the text the text encoder reads

and how the PNG `parameters` record them: `Lora hashes: "style: 0123456789ab"` (A1111's hash,
the first 12 hex digits of the file's sha256).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Optional

LoraRef = tuple[str, float]  # (path or name, weight)

LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?>")
LORA_SUFFIX = ".safetensors"
# Far beyond any weight that draws something (A1111's sliders stop at 2; "slider" LoRAs use ~10),
# and small enough that weight x delta stays finite in the model's weights.
MAX_LORA_WEIGHT = 100.0


def parse_weight(text: str, what: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise ValueError(f"{what}: the weight {text!r} is not a number") from None
    return check_weight(weight, what)


def check_weight(weight: float, what: str) -> float:
    """`weight` when it is a number a LoRA can be applied at; else ValueError naming `what`."""
    if not math.isfinite(weight):
        raise ValueError(f"{what}: the weight must be a finite number, got {weight:g}")
    if abs(weight) > MAX_LORA_WEIGHT:
        raise ValueError(f"{what}: the weight must be between -{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}, got {weight:g}")
    return weight


def parse_lora_flag(text: str) -> LoraRef:
    """'FILE[:WEIGHT]'; a colon followed by no number is part of the path (C:\\loras\\x)."""
    path, colon, weight = text.rpartition(":")
    try:
        float(weight)
    except ValueError:
        colon = ""
    if not colon or not path:
        return text, 1.0
    return path, parse_weight(weight, f"--lora {text}")


def prompt_lora_tags(prompt: str) -> list[LoraRef]:
    """The <lora:NAME:WEIGHT> tags of a prompt, in order (NAME, weight; no weight: 1)."""
    return [
        (name.strip(), parse_weight(weight, f"<lora:{name}:{weight}>") if weight else 1.0)
        for name, weight in LORA_TAG.findall(prompt)
    ]


def without_lora_tags(prompt: str) -> str:
    """The text the text encoder reads: the prompt with its LoRA tags removed."""
    return LORA_TAG.sub("", prompt).strip()


MODEL_LORAS = "loras"  # a model folder's own LoRAs: what --lora NAME and <lora:NAME> find by default


def model_lora_dir(model_folder: str | Path) -> Optional[str]:
    """The model folder's loras/, where LoRA names resolve when a request gives no lora_dir
    (None when it has none); front ends that check a request before loading the model ask here."""
    folder = Path(model_folder) / MODEL_LORAS
    return str(folder) if folder.is_dir() else None


def resolve_lora(name: str, lora_dir: Optional[str]) -> Path:
    """--lora: an existing path wins; else a name in `lora_dir`."""
    return Path(name) if Path(name).is_file() else resolve_lora_name(name, lora_dir)


def resolve_lora_name(name: str, lora_dir: Optional[str]) -> Path:
    """A prompt tag's NAME: NAME or NAME.safetensors inside `lora_dir`, never a path elsewhere
    (a prompt, perhaps from a web client, does not get to read the machine's files).
    ValueError naming where it was looked for."""
    if lora_dir is None:
        raise ValueError(f"LoRA {name!r} not found (give a path, or --lora-dir to look for names in)")
    folder = Path(lora_dir).resolve()
    for candidate in (folder / name, folder / (name + LORA_SUFFIX)):
        if candidate.resolve().is_relative_to(folder) and candidate.is_file():
            return candidate
    raise ValueError(f"LoRA {name!r} not found in {lora_dir} (looked for {name}{LORA_SUFFIX})")


def request_loras(loras: tuple[LoraRef, ...], prompt: str, lora_dir: Optional[str]) -> list[tuple[Path, float]]:
    """Every LoRA a request asks for, as files: the --lora ones, then the prompt's tags."""
    flags = [(resolve_lora(name, lora_dir), weight) for name, weight in loras]
    return flags + [(resolve_lora_name(name, lora_dir), weight) for name, weight in prompt_lora_tags(prompt)]


def file_hash(path: str | Path) -> str:
    """AUTOMATIC1111's LoRA hash: the first 12 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def lora_hashes(files: list[tuple[Path, float]]) -> str:
    """A1111's `Lora hashes` value: "name: hash, name2: hash2" (each file once)."""
    names = dict.fromkeys((Path(path).stem, file_hash(path)) for path, _ in files)
    return ", ".join(f"{name}: {digest}" for name, digest in names)
