"""ldm-serve as a user starts it: a real process answering HTTP; bad arguments -> one line, exit 2."""

import socket
import subprocess
import sys

import httpx
import pytest
from in_process import run_in_process

from ldm.server.process import ServerProcess


def run_cli(*args):
    process = subprocess.run([sys.executable, "-m", "ldm.cli.serve", *map(str, args)], capture_output=True, text=True, timeout=120)
    return process.returncode, process.stderr


def test_serves_the_api_and_the_page(tiny_model_dir, tiny_components):
    from ldm.control.model import controlnet_from_unet, save_controlnet

    # The served model's own ControlNets come with it.
    save_controlnet(controlnet_from_unet(tiny_components.denoiser, 2), "canny", tiny_model_dir / "controlnet" / "edges")
    with ServerProcess("--model", tiny_model_dir, "--max-work-seconds", 30, "--no-compile") as server:
        assert httpx.get(server.url + "/controlnet/model_list").json()["model_list"] == ["edges"]
        assert any("work limit 30 s per request; measured here at" in line for line in server.lines)
        # 1000 images x 1000 steps: refused at once with the estimate, not run for hours
        huge = httpx.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1000, "batch_size": 100, "n_iter": 10}, timeout=30)
        assert huge.status_code == 400 and "1000 images x 1000 steps" in huge.json()["detail"], huge.text
        assert server.url.startswith("http://127.0.0.1:")
        answer = httpx.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "seed": 3}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["images"]) == 1
        assert httpx.get(server.url + "/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-model"
        assert "<form" in httpx.get(server.url + "/").text


def test_another_address_needs_a_key_or_insecure(tiny_model_dir):
    status, stderr = run_cli("--model", tiny_model_dir, "--host", "0.0.0.0")
    assert status == 2 and stderr == "ldm-serve: error: listening on 0.0.0.0 lets other machines in: give --api-key KEY (or --insecure)\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/nowhere"], "model folder not found"),
        (["--model", "{tmp}"], "is not a model folder"),
        (["--max-queue", "0"], "--max-queue must be positive, got 0"),
        (["--header-timeout", "0"], "--header-timeout must be positive, got 0.0"),
        (["--max-connections", "-1"], "--max-connections must be positive, got -1"),
        (["--max-work-seconds", "-1"], "--max-work-seconds must be 0 (no limit) or more, got -1.0"),
        (["--lora-dir", "{tmp}/nowhere"], "is not a folder"),
        (["--port", "x"], "invalid int value"),
    ],
)
def test_bad_arguments(tiny_model_dir, tmp_path, args, message, monkeypatch):
    """main() in this process (the real command: the tests around); it must not get to serve."""
    import uvicorn

    from ldm.cli.serve import main

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("bad arguments were served"))
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] != "--model":
        args = ["--model", tiny_model_dir, *args]
    process = run_in_process("ldm-serve", main, "--port", 0, *args)  # port 0: no clash with a real server here
    status, stderr = process.returncode, process.stderr
    assert status == 2 and message in stderr and "Traceback" not in stderr and stderr.count("\n") == 1, stderr


def test_a_busy_port_is_one_line(tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        status, stderr = run_cli("--model", tiny_model_dir, "--port", taken.getsockname()[1])
    assert status == 2 and "cannot listen on 127.0.0.1:" in stderr and "Traceback" not in stderr, stderr


def test_help_prints_the_limits_as_a_person_reads_them():
    from ldm.cli.serve import build_parser

    text = " ".join(build_parser().format_help().split())  # argparse wraps to the terminal's width
    assert "--max-pixels N pixels per image, width x height (default 2097152)" in text
    assert "--max-mask-blur N mask blur in pixels (default 256)" in text
    assert "e+" not in text
