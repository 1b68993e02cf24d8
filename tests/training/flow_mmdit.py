"""A tiny flow-matching MMDiT model folder and the configs of stages that adapt it (lora, inpaint)."""

from __future__ import annotations

from configs import tiny_train_dict
from tiny import build_tiny

FLOW = {"scheduler__prediction_type": "flow", "scheduler__shift": 1.0, "scheduler__timestep_sampling": "logit_normal"}


def save_flow_mmdit(folder):
    """The tiny MMDiT with a flow schedule, saved as a model folder (returned)."""
    from ldm.formats.model_folder import save_model

    return save_model(build_tiny(denoiser="mmdit", **FLOW), folder)


def adapting_config(stage: str, output_dir, section: dict, backbone: str = "mmdit", max_steps: int = 4, **train):
    """`stage` with its `section` (init_from: the model it adapts) for 4 steps, checkpoints every
    2; validation drawn with flow Euler."""
    from ldm.config import from_dict
    from ldm.training.config import TrainConfig

    data = tiny_train_dict(stage, output_dir, backbone, max_steps=max_steps, save_every=2, **train)
    data[stage] = {key: str(value) if key == "init_from" else value for key, value in section.items()}
    data["validation"] = {"prompts": ["red over blue"], "steps": 2, "sampler": "flow-euler"}
    return from_dict(TrainConfig, data)
