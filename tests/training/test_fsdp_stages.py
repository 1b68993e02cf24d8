"""FSDP2 for the stages that train a part beside a frozen model: LoRA adapters (on the U-Net and
on the text encoder) and a ControlNet beside its frozen U-Net. The frozen weights are sharded
with the trained ones (fully_shard takes blocks that mix both) and never reach a checkpoint.
And lcm, whose EMA target network is sharded beside the student and follows it shard by shard.
Two CPU processes with gloo, as test_fsdp.py: the same losses as DDP, DDP's checkpoint layout,
the same exported file, and (LoRA, lcm) a resume that continues bit-exactly."""

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
STAGES = ("lora", "controlnet", "lcm")
EXPORTS = {"lora": "lora.safetensors", "controlnet": "controlnet/raw/diffusion_pytorch_model.safetensors",
           "lcm": "model/denoiser.safetensors"}  # fmt: skip


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
    """stage -> the folder holding a DDP and an FSDP run of it from the same tiny model, two
    processes each; launched when a test first asks (a -k selection launches only its stages)."""
    root = tmp_path_factory.mktemp("fsdp-stages")
    images = tiny_image_folder(root / "images", n=8)
    launched = set()

    def of(stage):
        if stage not in launched:
            for kind in ("ddp", "fsdp"):
                launch_stage(kind, root / kind / stage, stage, saved_tiny_models("unet"), images)
            launched.add(stage)
        return root

    return of


@pytest.mark.parametrize("stage", STAGES)
def test_fsdp_trains_the_part_as_ddp_does(runs, stage):
    ddp, fsdp = runs(stage) / "ddp" / stage, runs(stage) / "fsdp" / stage
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=1e-6)
    expected, got = (read_safetensors(run / EXPORTS[stage]) for run in (ddp, fsdp))
    assert set(got) == set(expected) and all(got[k].shape == expected[k].shape for k in expected)  # whole tensors
    worst = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert worst < 2e-4, worst  # as test_fsdp.py: the order of the gradient sums differs


@pytest.mark.parametrize("stage", STAGES)
def test_checkpoints_hold_the_trained_part_only_in_ddps_layout(runs, stage):
    ddp, fsdp = (runs(stage) / kind / stage / "checkpoints" / "step-000003" for kind in ("ddp", "fsdp"))
    for name in ("weights.safetensors", "optimizer.safetensors", "ema.safetensors"):
        expected, got = read_safetensors(ddp / name), read_safetensors(fsdp / name)
        assert set(got) == set(expected) and all(got[k].shape == expected[k].shape for k in expected), name
    trained = read_safetensors(fsdp / "weights.safetensors")
    part = {"lora": lambda key: ".lora_A." in key or ".lora_B." in key, "controlnet": lambda key: key.startswith("controlnet."),
            "lcm": lambda key: key.startswith("denoiser.")}[stage]  # fmt: skip
    assert trained and all(part(key) for key in trained)  # nothing of the frozen model
    if stage == "lora":
        assert any(key.startswith("text_encoder.") for key in trained)  # the text encoder's adapters too


def test_lcms_target_network_follows_the_student_under_fsdp_as_under_ddp(runs):
    """The whole target network (stage.safetensors) an FSDP run checkpoints is DDP's: blended
    shard by shard from the sharded student, gathered whole."""
    ddp, fsdp = (read_safetensors(runs("lcm") / kind / "lcm" / "checkpoints" / "step-000003" / "stage.safetensors") for kind in ("ddp", "fsdp"))
    assert set(fsdp) == set(ddp) and all(fsdp[k].shape == ddp[k].shape for k in ddp) and all(k.startswith("target.") for k in ddp)
    assert max(float((ddp[k] - fsdp[k]).abs().max()) for k in ddp) < 2e-4
    first = read_safetensors(runs("lcm") / "fsdp" / "lcm" / "checkpoints" / "step-000002" / "stage.safetensors")
    assert any(not (first[k] == fsdp[k]).all() for k in fsdp)  # it moved between the checkpoints


@pytest.mark.parametrize("stage", ["lora", "lcm"])
def test_resumes_under_fsdp_bit_exactly(runs, saved_tiny_models, stage):
    root = runs(stage)
    fsdp, resumed = root / "fsdp" / stage, root / "resumed" / stage
    launch_stage("fsdp", resumed, stage, saved_tiny_models("unet"), root / "images", resume=fsdp / "checkpoints" / "step-000002")
    assert losses(resumed) == losses(fsdp)[2:]
    whole, again = read_safetensors(fsdp / EXPORTS[stage]), read_safetensors(resumed / EXPORTS[stage])
    assert set(whole) == set(again) and all((whole[k] == again[k]).all() for k in whole)
