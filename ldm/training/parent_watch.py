"""Workers stop when their launcher dies. `accelerate launch` (and torchrun) start the training
processes as its children; killing only the launcher (kill -9, a lost SSH session's SIGHUP to
it alone) would leave them training, holding GPUs and writing checkpoints nobody waits for.
A daemon thread notices that the parent is gone (the process was re-parented: os.getppid()
changed) and ends the process; its checkpoints are crash-safe, --resume latest continues.

A thread, not Linux's prctl(PR_SET_PDEATHSIG): that signal fires when the parent *thread*
that forked the worker ends, which a launcher may do while it lives, and it is Linux-only.
Only launched workers watch: a plain `ldm-train` outlives the shell that started it (nohup)."""

from __future__ import annotations

import os
import sys
import threading
import time

# Set in the workers' environment by torchrun / accelerate's multi-process launcher
# (LOCAL_RANK) and by accelerate's single-process launcher (ACCELERATE_MIXED_PRECISION).
LAUNCHER_VARIABLES = ("LOCAL_RANK", "ACCELERATE_MIXED_PRECISION")
EXIT_STATUS = 143  # as if ended by SIGTERM


def launched_by_a_launcher(environ=os.environ) -> bool:
    return any(name in environ for name in LAUNCHER_VARIABLES)


def watch_parent(interval: float = 1.0) -> threading.Thread:
    """Starts the thread that ends this process within `interval` seconds of its parent's death."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        print(f"ldm-train: the launcher (PID {parent}) is gone; stopping this worker (PID {os.getpid()})", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS)  # the main thread may be deep in a step or a collective: no clean-up to wait for

    thread = threading.Thread(target=watch, name="ldm-parent-watch", daemon=True)
    thread.start()
    return thread


def stop_with_launcher() -> None:
    """At a worker's start: watch the launcher when there is one."""
    if launched_by_a_launcher():
        watch_parent()
