"""The end of a run: processes leave the group together on success; an error destroys this
process's group at once (no waiting for a peer that may never come) and goes on up."""

import pytest
import torch.distributed as dist

from ldm.training.run_end import leaving_together


class Accelerator:
    def __init__(self):
        self.calls = []

    def wait_for_everyone(self):
        self.calls.append("wait")

    def end_training(self):
        self.calls.append("end")


def test_a_run_that_ends_waits_for_everyone_before_the_group_goes():
    accelerator = Accelerator()
    with leaving_together(accelerator):
        pass
    assert accelerator.calls == ["wait", "end"]


def test_an_error_destroys_the_group_without_waiting(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    accelerator = Accelerator()
    with pytest.raises(ValueError, match="bad step"):
        with leaving_together(accelerator):
            raise ValueError("bad step")
    assert accelerator.calls == [] and not dist.is_initialized()
