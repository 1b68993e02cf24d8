"""ddp_run.py under accelerate's FSDP on CPU processes (test_fsdp.py).

accelerate reports FSDP only for GPU process groups (its state takes the FSDP branch for the
multi-GPU types), while torch's fully_shard runs on CPU with gloo. So the process group is set up
on the CPU first and then marked multi-GPU: the accelerator ldm.training.loop builds next takes
accelerate's FSDP path, with the plugin the launch config put in the environment."""

import runpy
from pathlib import Path

from accelerate.state import PartialState
from accelerate.utils import DistributedType

PartialState(cpu=True)
PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
runpy.run_path(str(Path(__file__).parent / "ddp_run.py"), run_name="__main__")
