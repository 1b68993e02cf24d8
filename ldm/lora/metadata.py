"""Alpha kept in the metadata header of LoRA files written by diffusers (peft layout).

diffusers' `save_lora_weights` stores each part's peft `LoraConfig` as one JSON object under
the header key `lora_adapter_metadata`, its keys prefixed by the part: `unet.r`,
`unet.lora_alpha`, `unet.alpha_pattern`, `unet.use_rslora`, `text_encoder.lora_alpha`, ...
The tensors then carry no alpha. As peft scales them, a module's delta is multiplied by
alpha / r (alpha / sqrt(r) with rsLoRA), where an `alpha_pattern` entry whose key matches the
module's name (the whole name or a dotted suffix, read as a regular expression) gives that
module its own alpha.
"""

from __future__ import annotations

import json
import math
import re
from typing import Optional

from ldm.errors import LdmError

ADAPTER_METADATA = "lora_adapter_metadata"


class AdapterMetadataError(LdmError, ValueError):
    """The header's adapter metadata is not what diffusers writes; the message says what."""


def adapter_configs(metadata: dict[str, str]) -> dict[str, dict]:
    """part prefix, as the header names the parts (unet, text_encoder) -> its peft config
    entries; {} without the key."""
    if ADAPTER_METADATA not in metadata:
        return {}
    try:
        entries = json.loads(metadata[ADAPTER_METADATA])
    except json.JSONDecodeError as error:
        raise AdapterMetadataError(f"its {ADAPTER_METADATA} header is not JSON ({error.msg})") from None
    if not isinstance(entries, dict):
        raise AdapterMetadataError(f"its {ADAPTER_METADATA} header is not a JSON object")
    configs: dict[str, dict] = {}
    for key, value in entries.items():
        part, _, name = key.partition(".")
        configs.setdefault(part, {})[name] = value
    return configs


def effective_alpha(config: dict, module: str, rank: int) -> Optional[float]:
    """The alpha that makes our alpha / rank equal peft's scale for `module` (a module name as in
    the file, without the part prefix); None when the config gives no alpha."""
    patterns = config.get("alpha_pattern") or {}
    alpha = next((value for key, value in patterns.items() if _names(key, module)), config.get("lora_alpha"))
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise AdapterMetadataError(f"the alpha of {module} in its {ADAPTER_METADATA} header is {alpha!r}, not a finite number")
    return float(alpha) * math.sqrt(rank) if config.get("use_rslora") else float(alpha)


def _names(pattern: str, module: str) -> bool:
    try:
        return re.fullmatch(rf"(?:.*\.)?(?:{pattern})", module) is not None
    except re.error:
        raise AdapterMetadataError(f"alpha_pattern key {pattern!r} in its {ADAPTER_METADATA} header is not a regular expression") from None
