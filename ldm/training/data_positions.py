"""The data position a checkpoint keeps, for every process.

Map-style data is at the same (epoch, batch) in every process. A webdataset stream is not:
each process reads its own shards, and each of its DataLoader workers is at its own place in
them (ldm.data.stream_position). The checkpoint is written by the main process, so the
processes' positions are gathered to it:

    "data_position": {"epoch": 1, "batch": 4,                 # the main process's, as ever
                      "processes": [{"epoch": 1, "batch": 4, "stream": {...}},   # process 0
                                    {"epoch": 1, "batch": 4, "stream": {...}}]}  # process 1

and on resume each process seeks its own. Resumed with another number of processes, the
shards are split differently: every process takes the main process's epoch and batch, and
the stream reads past the consumed batches of that epoch (the older way, not exact).
"""

from __future__ import annotations

from ldm.data.batches import StreamBatches

PROCESSES = "processes"


def saved_data_position(accelerator, batches) -> dict:
    """What the checkpoint keeps of where the data stands. Called in every process (a stream's
    positions are gathered, a collective call); the main process writes the result."""
    position = batches.position()
    if not isinstance(batches, StreamBatches):
        return position
    from accelerate.utils import gather_object

    processes = gather_object([position]) if accelerator.num_processes > 1 else [position]
    return {"epoch": processes[0]["epoch"], "batch": processes[0]["batch"], PROCESSES: processes}


def process_data_position(saved: dict, rank: int, world_size: int) -> dict:
    """The position process `rank` of `world_size` resumes from."""
    processes = saved.get(PROCESSES)
    if processes is not None and len(processes) == world_size:
        return processes[rank]
    return {"epoch": saved["epoch"], "batch": saved["batch"]}
