"""FSDP2 (accelerate's plugin over torch's fully_shard) on two CPU processes with gloo, launched
with the README's accelerate config: the same losses as DDP, checkpoints in DDP's layout, and a
resume that continues bit-exactly. fsdp_run.py tells how FSDP gets past accelerate's GPU check."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from test_multiprocess import HERE, REPO, launch, run_launch
from tiny_data import tiny_image_folder

from ldm.formats.model_folder import read_safetensors

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")
STEPS, BATCH = 3, 2  # per process: global batch 4 over 8 images, the third step starts epoch two


def launch_fsdp(output_dir, images, save_every=2, resume=None):
    command = [ACCELERATE, "launch", "--config_file", str(REPO / "docs" / "accelerate" / "fsdp2.yaml"),
               "--num_processes", "2", "--mixed_precision", "no",
               "--main_process_port", str(29700 + os.getpid() % 1000),
               str(HERE / "fsdp_run.py"), str(output_dir), str(BATCH), str(STEPS), str(images), "unet", str(save_every)]
    command += [str(resume)] if resume else []
    run_launch(command)


def losses(output_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (output_dir / "log.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One DDP and one FSDP run of the same config, two processes each."""
    root = tmp_path_factory.mktemp("fsdp")
    images = tiny_image_folder(root / "images", n=8)
    launch(root / "ddp", 2, BATCH, images, "unet", steps=STEPS)
    launch_fsdp(root / "fsdp", images)
    return root


def test_fsdp_trains_as_ddp_does(runs):
    assert losses(runs / "fsdp") == pytest.approx(losses(runs / "ddp"), abs=1e-6)
    ddp = read_safetensors(runs / "ddp" / "model" / "denoiser.safetensors")
    fsdp = read_safetensors(runs / "fsdp" / "model" / "denoiser.safetensors")
    assert set(ddp) == set(fsdp) and all(fsdp[k].shape == ddp[k].shape for k in ddp)  # whole tensors, not shards
    # As in test_multiprocess: only the summation order of the gradient reductions differs.
    worst = max(float((ddp[k] - fsdp[k]).abs().max()) for k in ddp)
    assert worst < 2e-4, worst


def test_fsdp_checkpoints_have_ddps_layout(runs):
    ddp, fsdp = (runs / run / "checkpoints" / "step-000003" for run in ("ddp", "fsdp"))
    for name in ("weights.safetensors", "optimizer.safetensors", "ema.safetensors"):
        expected, got = read_safetensors(ddp / name), read_safetensors(fsdp / name)
        assert set(got) == set(expected), name
        assert all(got[k].shape == expected[k].shape for k in expected), name
    structure = [json.loads((folder / "trainer.json").read_text())["optimizer"] for folder in (ddp, fsdp)]
    assert structure[0]["param_groups"] == structure[1]["param_groups"]


def test_fsdp_resume_continues_bit_exactly(runs):
    resumed = runs / "resumed"
    launch_fsdp(resumed, runs / "images", resume=runs / "fsdp" / "checkpoints" / "step-000002")
    assert losses(resumed) == losses(runs / "fsdp")[2:]
    whole = read_safetensors(runs / "fsdp" / "model" / "denoiser.safetensors")
    again = read_safetensors(resumed / "model" / "denoiser.safetensors")
    assert all((whole[k] == again[k]).all() for k in whole)
    for name in ("weights.safetensors", "optimizer.safetensors", "ema.safetensors"):
        expected = read_safetensors(runs / "fsdp" / "checkpoints" / "step-000003" / name)
        got = read_safetensors(resumed / "checkpoints" / "step-000003" / name)
        assert all((expected[k] == got[k]).all() for k in expected), name
