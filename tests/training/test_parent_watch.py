"""A launched worker stops when its launcher is killed: a parent process starts a worker that
watches it (as ldm-train does under accelerate launch), the parent gets kill -9, the worker ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ldm.training.parent_watch import launched_by_a_launcher

REPO = Path(__file__).parents[2]
WORKER = "import time; from ldm.training.parent_watch import watch_parent; watch_parent(0.1); print('watching', flush=True); time.sleep(60)"
LAUNCHER = textwrap.dedent(
    f"""
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", {WORKER!r}], stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "watching"
    print(worker.pid, flush=True)
    time.sleep(60)
    """
)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its reaping is left


def test_the_worker_ends_when_its_launcher_is_killed():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(launcher.stdout.readline())
    try:
        assert running(worker)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 5
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(worker), "the worker outlived its launcher"
    finally:
        if running(worker):
            os.kill(worker, signal.SIGKILL)


def test_only_launched_workers_watch():
    assert launched_by_a_launcher({"LOCAL_RANK": "0", "RANK": "1"})
    assert launched_by_a_launcher({"ACCELERATE_MIXED_PRECISION": "no"})
    assert not launched_by_a_launcher({"PATH": "/usr/bin"})  # ldm-train from a shell outlives it
