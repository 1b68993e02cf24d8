"""What a LoRA was trained to predict, so that a flow-matching LoRA on an eps/v model (or the
reverse) is refused in one line: its deltas were learned against velocity targets on straight
noise paths, and on a model of the other kind they steer it somewhere else.

A file's kind: the `ldm_prediction_type` its header carries (the lora stage writes it), else
`flow` for diffusers' SD3 layout (transformer.* keys: SD3 is trained with flow matching), else
unknown (kohya and peft files for U-Nets carry none), which passes. Between eps and v nothing is
refused: files rarely say which, and a shared SD 2 LoRA is used on both.
"""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.schedule import is_flow

PREDICTION_KEY = "ldm_prediction_type"
SD3_PEFT_PREFIX = "transformer."
FLOW = "flow"


def prediction_type(scheduler_config: dict) -> str:
    """A model's target as the lora stage records it: flow, epsilon or v_prediction."""
    return FLOW if is_flow(scheduler_config) else scheduler_config["prediction_type"]


def file_prediction_type(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> Optional[str]:
    """What the file says (or its layout implies) it was trained to predict; None when unknown."""
    if PREDICTION_KEY in metadata:
        return metadata[PREDICTION_KEY]
    if any(key.startswith(SD3_PEFT_PREFIX) for key in state):
        return FLOW
    return None


def parameterisation_mismatch(state: dict[str, torch.Tensor], metadata: dict[str, str], scheduler_config: dict) -> Optional[str]:
    """Why the file's training target does not fit the model's (flow on one side only); None otherwise."""
    trained, model = file_prediction_type(state, metadata), prediction_type(scheduler_config)
    if trained is None or (trained == FLOW) == (model == FLOW):
        return None
    return f"this LoRA was trained for {_described(trained)}; this model predicts {_described(model)}"


def _described(kind: str) -> str:
    return "flow matching (velocity)" if kind == FLOW else {"epsilon": "eps (noise)", "v_prediction": "v"}.get(kind, kind)
