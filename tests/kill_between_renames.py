"""kill -9 at the dangerous moment of a folder replace: a child process runs a save that
stops just before the new folder is renamed into place (announcing it with a marker file);
the test SIGKILLs it there, as a power cut or the OOM killer would.

Child side: `stop_before_rename_into(target, marker)` wraps os.rename/os.replace/os.link so that the
rename (or link) of a temporary folder (".NAME.tmp-*") onto `target` never happens. Parent side:
`run_until_killed(code, marker)`. Without a child: `left_aside(folder)` puts a folder where
such a kill leaves it, `dead_pid()` gives leftovers a writer that is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def stop_before_rename_into(target: Path, marker: Path) -> None:
    target = os.path.abspath(target)

    def wrap(rename):
        def stopping(source, destination, *args, **kwargs):
            if os.path.abspath(destination) == target and ".tmp-" in os.path.basename(source):
                stop_here(marker)
            return rename(source, destination, *args, **kwargs)

        return stopping

    os.rename = wrap(os.rename)
    os.replace = wrap(os.replace)
    os.link = wrap(os.link)  # a file that must not replace one: published by a hard link


def stop_here(marker: Path) -> None:
    """Child side: announce the dangerous moment and wait there for the kill."""
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def run_until_killed(code: str, marker: Path, timeout: float = 300) -> None:
    """Runs `code` in a fresh Python, SIGKILLs it once `marker` appears, and reaps it. Fails
    if the child ends on its own first (it never reached the dangerous moment)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(TESTS / "training")]),
                   "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], env=environment, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child ended (status {child.returncode}) before the rename: {child.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise AssertionError("the child never reached the rename")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()  # reaped: its PID is no longer a running writer
    child.stderr.close()


def kill_while_saving_again(model: Path, marker: Path) -> None:
    """A child loads the model folder `model` and saves it again over itself; killed between
    the two renames of the swap (the old folder moved aside, the new one not yet in place)."""
    run_until_killed(f"""
from pathlib import Path
from kill_between_renames import stop_before_rename_into
from ldm.formats.model_folder import load_model, save_model
model = Path({str(model)!r})
components = load_model(model)
stop_before_rename_into(model, Path({str(marker)!r}))
save_model(components, model)
""", marker)


def dead_pid() -> int:
    """The process id of a writer that is gone: a child that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def left_aside(folder: Path) -> Path:
    """Moves `folder` where a save killed between the two renames of its swap leaves it
    (.NAME.old-PID-*, PID a dead writer's), as run_until_killed does in seconds more."""
    aside = folder.with_name(f".{folder.name}.old-{dead_pid()}-abcd1234")
    os.rename(folder, aside)
    return aside
