"""Two CPU processes under accelerate give the weights one process gets with the same
global batch: same samples, same noise (drawn for the global batch), averaged gradients.
The images are read from a folder by ldm.data, the path ldm-train takes.

`accelerate launch --cpu --num_processes 2` starts ONE process unless an MPI hostfile is
configured (accelerate's simple launcher), so the processes are started by torchrun through
`--multi_gpu`, and ACCELERATE_USE_CPU keeps them on the CPU with the gloo backend."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_data import tiny_image_folder, tiny_shards

from ldm.formats.model_folder import read_safetensors

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def launch(output_dir, processes, batch, images, backbone, steps=3, resume=None, buckets=False):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    launcher = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    command = [accelerate, "launch", *launcher, "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 1000 + processes),
               str(HERE / "ddp_run.py"), str(output_dir), str(batch), str(steps), str(images), backbone, *(["0", str(resume)] if resume else [])]
    run_launch(command, {"DDP_RUN_BUCKETS": str(int(buckets))})


def run_launch(command: list[str], extra_env: dict | None = None) -> None:
    """An `accelerate launch` of CPU processes (gloo), which must succeed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **(extra_env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, head_and_tail(result.stderr)


def head_and_tail(stderr: str, head: int = 2000, tail: int = 4000) -> str:
    """A failed launch's stderr: where it started going wrong (a rank's first words) and how it ended."""
    if len(stderr) <= head + tail:
        return stderr
    return f"{stderr[:head]}\n[... {len(stderr) - head - tail} characters left out ...]\n{stderr[-tail:]}"


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI not installed")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, backbone):
    # 8 images, global batch 4: the third step starts the second epoch.
    images = tiny_image_folder(tmp_path / "images", n=8)
    launch(tmp_path / "one", 1, 4, images, backbone)
    launch(tmp_path / "two", 2, 2, images, backbone)
    one = read_safetensors(tmp_path / "one" / "model" / "denoiser.safetensors")
    two = read_safetensors(tmp_path / "two" / "model" / "denoiser.safetensors")
    # Gradients differ only in float summation order (allreduce vs one batch); Adam divides
    # each gradient by its own running size, so a weight whose gradient is almost zero can
    # move differently on rounding alone: 2e-4 is 20% of one step's move (lr 1e-3). Same
    # samples and noise show in the losses, equal to 1e-6 through the epoch boundary.
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 2e-4, worst
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines() if '"loss"' in line] for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    log_one = (tmp_path / "one" / "log.jsonl").read_text()
    assert "1 process(es), global batch 4" in log_one
    assert "2 process(es), global batch 4" in (tmp_path / "two" / "log.jsonl").read_text()


def logged(output_dir, name: str) -> list:
    return [row[name] for row in map(json.loads, (output_dir / "log.jsonl").read_text().splitlines()) if name in row]


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI not installed")
def test_two_processes_resume_each_its_own_place_in_the_shards(tmp_path):
    # 4 shards of 2 samples: each process reads 2 shards, batch 1; the checkpoint at step 2 is mid-epoch.
    pattern = tiny_shards(tmp_path / "shards")
    launch(tmp_path / "whole", 2, 1, pattern, "unet")
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-000002"
    saved = json.loads((checkpoint / "trainer.json").read_text())["data_position"]
    places = [process["stream"]["positions"][0] for process in saved["processes"]]
    assert len(places) == 2 and places[0] != places[1]  # each process's own shards, both kept
    launch(tmp_path / "resumed", 2, 1, pattern, "unet", resume=checkpoint)
    assert logged(tmp_path / "resumed", "loss") == pytest.approx(logged(tmp_path / "whole", "loss")[2:], abs=1e-6)
    assert logged(tmp_path / "resumed", "data/images") == [2]  # step 3's two images, none of steps 1 and 2
