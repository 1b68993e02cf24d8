"""Epsilon or v-prediction: what a single-file Stable Diffusion checkpoint's weights do not say.

In order (the first that answers wins):
  1. A sidecar beside the file, as AUTOMATIC1111 reads one: NAME.yaml next to
     NAME.safetensors, the original (LDM) inference config. Only `model.params.parameterization`
     is read ("v", or "eps", LDM's default when the key is absent); a hand-written sidecar may
     hold just `parameterization: v` (or eps). This is also how a user overrides 2 and 3.
     (An SD3 file's sidecar may instead name the folder its missing parts come from:
     `parts_from: DIR`, ldm.formats.sd3_single_file.)
  2. The config ldm wrote into the file's metadata (ldm.formats.single_file).
  3. diffusers' rule for files without a config: a U-Net reading a 1024-wide context (SD 2.x,
     OpenCLIP ViT-H) that is not a 9-channel inpainting model is a v-prediction model (the
     768 px SD 2.x), unless its `global_step` is 875000 (SD 2 base, 512 px, epsilon). Every
     other file is epsilon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import yaml

from ldm.formats.original_layout import UNET_PREFIX
from ldm.models.weights import ModelError

PARAMETERIZATIONS = {"eps": "epsilon", "v": "v_prediction"}  # LDM's names -> the scheduler's
SD2_CONTEXT_WIDTH = 1024
INPAINTING_IN_CHANNELS = 9
SD2_BASE_GLOBAL_STEP = 875000  # diffusers' marker for the 512 px epsilon SD 2 base
PARTS_FROM = "parts_from"  # an SD3 sidecar's key: the diffusers folder the file's missing parts come from


def detected_prediction_type(state: dict[str, torch.Tensor]) -> str:
    """diffusers' choice for a checkpoint without a config (3 above)."""
    to_k = next((v for k, v in state.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if to_k is None or to_k.shape[-1] != SD2_CONTEXT_WIDTH:
        return "epsilon"
    if conv_in is not None and conv_in.shape[1] == INPAINTING_IN_CHANNELS:
        return "epsilon"
    global_step = state.get("global_step")
    if global_step is not None and global_step.numel() == 1 and int(global_step.item()) == SD2_BASE_GLOBAL_STEP:
        return "epsilon"
    return "v_prediction"


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".yaml")


def _sidecar_document(checkpoint: Path):
    """(the sidecar's path, its YAML document) or None without one; ModelError naming it when unreadable."""
    sidecar = sidecar_path(checkpoint)
    if not sidecar.is_file():
        return None
    try:
        return sidecar, yaml.safe_load(sidecar.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"{sidecar}: cannot read it ({error})") from None
    except yaml.YAMLError as error:
        raise ModelError(f"{sidecar}: not valid YAML ({getattr(error, 'problem', None) or 'unreadable'})") from None


def sidecar_prediction_type(checkpoint: Path) -> Optional[str]:
    """The prediction type the sidecar beside `checkpoint` names (1 above); None without one.
    ModelError naming the sidecar when it cannot be read or names something else."""
    found = _sidecar_document(checkpoint)
    if found is None:
        return None
    sidecar, document = found
    if isinstance(document, dict) and PARTS_FROM in document and not {"parameterization", "model"} & document.keys():
        return None
    value = _parameterization(document, sidecar)
    if value not in PARAMETERIZATIONS:
        raise ModelError(f"{sidecar}: parameterization {value!r} is not one ldm samples (eps or v)")
    return PARAMETERIZATIONS[value]


def sidecar_parts_from(checkpoint: Path) -> Optional[Path]:
    """The folder the sidecar's `parts_from` names (relative to the sidecar's folder), or None."""
    found = _sidecar_document(checkpoint)
    if found is None or not isinstance(found[1], dict) or found[1].get(PARTS_FROM) is None:
        return None
    return (found[0].parent / str(found[1][PARTS_FROM])).resolve()


def _parameterization(document, sidecar: Path):
    if isinstance(document, dict) and "parameterization" in document:
        return document["parameterization"]
    params = document.get("model", {}).get("params") if isinstance(document, dict) and isinstance(document.get("model"), dict) else None
    if not isinstance(params, dict):
        raise ModelError(
            f"{sidecar} is beside the checkpoint but is not an original Stable Diffusion config (no model.params) "
            "nor says `parameterization: v` or `eps`"
        )
    return params.get("parameterization", "eps")  # LDM's default
