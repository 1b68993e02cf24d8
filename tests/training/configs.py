"""Tiny training configs (dicts) for the tests: a few steps of each stage on CPU in seconds."""

from __future__ import annotations

import copy

from tiny import tiny_model_dict

TRAIN = {
    "seed": 0,
    "max_steps": 4,
    "batch_size": 2,
    "lr": 1e-3,
    "save_every": 2,
    "keep_last": 2,
    "log_every": 1,
    "progress": False,
    "allow_random_text_encoder": True,  # tiny runs: a fresh text encoder is the point
}


def tiny_train_dict(stage: str, output_dir, backbone: str = "unet", **train) -> dict:
    return {
        "stage": stage,
        "model": tiny_model_dict(denoiser=backbone),
        "data": {"source": "imagefolder", "path": "unused", "resolution": 32, "caption_dropout": 0.1},
        "train": {**copy.deepcopy(TRAIN), "output_dir": str(output_dir), **train},
        "autoencoder": {"scaling_samples": 4, "eval_samples": 4},
        "clip": {"image_size": 32, "patch_size": 8, "vision_width": 32, "vision_layers": 2, "vision_head_width": 16},
    }


def tiny_train_config(stage: str, output_dir, backbone: str = "unet", **train):
    from ldm.config import from_dict
    from ldm.training.config import TrainConfig

    return from_dict(TrainConfig, tiny_train_dict(stage, output_dir, backbone, **train))
