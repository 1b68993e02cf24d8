"""Opt-in forms of the training step that run the same model faster on some machines:
train.channels_last (NHWC convolutions, which oneDNN and cuDNN prefer) and train.compile
(torch.compile of the denoiser; minutes of compiling before the first step). Measured side
by side by tools/bench_train.py; docs/backbones.md has this machine's figures."""

from __future__ import annotations

import torch

from ldm.config import ConfigError

# Stages whose trained part is a denoiser (what train.compile compiles).
COMPILED_STAGES = ("text2img", "inpaint", "controlnet", "lcm", "lora", "upscaler")


def check_speedups(config) -> None:
    if config.train.compile and config.stage not in COMPILED_STAGES:
        raise ConfigError(f"train.compile compiles the denoiser: stages {', '.join(COMPILED_STAGES)}, not {config.stage}")


def apply_speedups(stage, train) -> None:
    """Before the optimizer is built: the parameters stay the same objects."""
    if train.channels_last:
        stage.module.to(memory_format=torch.channels_last)
    if train.compile:
        for part in stage.compiled_parts():
            part.compile()  # in place: parameter names (checkpoints, exports) stay as they were

