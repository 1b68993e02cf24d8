"""How a training process leaves its process group, on success or on an error.

gloo's C++ threads serve each connection to a peer. A process that destroys the group while its
peer still uses a connection (the peer is finishing the last collective, or has not reached the
end yet), or that exits with the group alive (its threads torn down by the interpreter's exit),
can abort with "terminate called without an active exception" (SIGABRT). So: on success every
process waits for the others before the group goes; on an error the group is destroyed at once,
without waiting (a peer may never arrive), and the error goes on up."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def leaving_together(accelerator):
    """Around a run: its end waits for every process, then ends the trackers and the group."""
    try:
        yield
    except BaseException:
        destroy_group()
        raise
    accelerator.wait_for_everyone()
    accelerator.end_training()


def destroy_group() -> None:
    """This process's group, gone without waiting for the others (an error is on its way up)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
