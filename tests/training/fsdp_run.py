"""ddp_run.py (or the runner named first: stage_run.py) under accelerate's FSDP on CPU processes
(test_fsdp.py, test_fsdp_stages.py).

accelerate reports FSDP only for GPU process groups (its state takes the FSDP branch for the
multi-GPU types), while torch's fully_shard runs on CPU with gloo. So the process group is set up
on the CPU first and then marked multi-GPU: the accelerator ldm.training.loop builds next takes
accelerate's FSDP path, with the plugin the launch config put in the environment."""

import runpy
import sys
from pathlib import Path

from accelerate.state import PartialState
from accelerate.utils import DistributedType

PartialState(cpu=True)
PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
runner = sys.argv.pop(1) if sys.argv[1].endswith(".py") else "ddp_run.py"
sys.argv[0] = str(Path(__file__).parent / runner)
runpy.run_path(sys.argv[0], run_name="__main__")
