"""FSDP2 for the stages that train a part beside a frozen model: LoRA adapters (on the U-Net and
on the text encoder) and a ControlNet beside its frozen U-Net. The frozen weights are sharded
with the trained ones (fully_shard takes blocks that mix both) and never reach a checkpoint.
Two CPU processes with gloo, as test_fsdp.py: the same losses as DDP, DDP's checkpoint layout,
the same exported file, and (LoRA) a resume that continues bit-exactly."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from test_multiprocess import HERE, REPO, logged, run_launch
from tiny_data import tiny_image_folder

from ldm.formats.model_folder import read_safetensors

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
STAGES = ("lora", "controlnet")
EXPORTS = {"lora": "lora.safetensors", "controlnet": "controlnet/raw/diffusion_pytorch_model.safetensors"}


def launch_stage(kind, output_dir, stage, model, images, resume=None):
    """stage_run.py on two processes: DDP (torchrun through --multi_gpu) or FSDP (the README's config)."""
    if kind == "ddp":
        launcher = ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no", str(HERE / "stage_run.py")]
    else:
        launcher = ["--config_file", str(REPO / "docs" / "accelerate" / "fsdp2.yaml"), str(HERE / "fsdp_run.py"), "stage_run.py"]
    port = ["--main_process_port", str(31000 + os.getpid() % 1000)]
    command = [ACCELERATE, "launch", "--num_processes", "2", "--mixed_precision", "no", *port, *launcher,
               str(output_dir), stage, str(model), str(images), *([str(resume)] if resume else [])]
    run_launch(command)


def losses(output_dir) -> list[float]:
    return logged(output_dir, "loss")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, saved_tiny_models):
    """A DDP and an FSDP run of each stage from the same tiny model, two processes each."""
    root = tmp_path_factory.mktemp("fsdp-stages")
    images = tiny_image_folder(root / "images", n=8)
    for stage in STAGES:
        for kind in ("ddp", "fsdp"):
            launch_stage(kind, root / kind / stage, stage, saved_tiny_models("unet"), images)
    return root


@pytest.mark.parametrize("stage", STAGES)
def test_fsdp_trains_the_part_as_ddp_does(runs, stage):
    ddp, fsdp = runs / "ddp" / stage, runs / "fsdp" / stage
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=1e-6)
    expected, got = (read_safetensors(run / EXPORTS[stage]) for run in (ddp, fsdp))
    assert set(got) == set(expected) and all(got[k].shape == expected[k].shape for k in expected)  # whole tensors
    worst = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert worst < 2e-4, worst  # as test_fsdp.py: the order of the gradient sums differs


@pytest.mark.parametrize("stage", STAGES)
def test_checkpoints_hold_the_trained_part_only_in_ddps_layout(runs, stage):
    ddp, fsdp = (runs / kind / stage / "checkpoints" / "step-000003" for kind in ("ddp", "fsdp"))
    for name in ("weights.safetensors", "optimizer.safetensors", "ema.safetensors"):
        expected, got = read_safetensors(ddp / name), read_safetensors(fsdp / name)
        assert set(got) == set(expected) and all(got[k].shape == expected[k].shape for k in expected), name
    trained = read_safetensors(fsdp / "weights.safetensors")
    part = {"lora": lambda key: ".lora_A." in key or ".lora_B." in key, "controlnet": lambda key: key.startswith("controlnet.")}[stage]
    assert trained and all(part(key) for key in trained)  # nothing of the frozen model
    if stage == "lora":
        assert any(key.startswith("text_encoder.") for key in trained)  # the text encoder's adapters too


def test_lora_resumes_under_fsdp_bit_exactly(runs, saved_tiny_models):
    fsdp, resumed = runs / "fsdp" / "lora", runs / "resumed" / "lora"
    launch_stage("fsdp", resumed, "lora", saved_tiny_models("unet"), runs / "images", resume=fsdp / "checkpoints" / "step-000002")
    assert losses(resumed) == losses(fsdp)[2:]
    whole, again = read_safetensors(fsdp / EXPORTS["lora"]), read_safetensors(resumed / EXPORTS["lora"])
    assert set(whole) == set(again) and all((whole[k] == again[k]).all() for k in whole)
