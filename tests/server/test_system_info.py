"""/sdapi/v1/memory on a GPU, in A1111's layout; no GPU here, so torch's CUDA counters are stood in for."""

import torch

from ldm.server.system_info import memory


def test_gpu_memory_in_a1111s_layout(monkeypatch):
    stats = {"allocated_bytes.all.current": 5, "allocated_bytes.all.peak": 9, "reserved_bytes.all.current": 16,
             "reserved_bytes.all.peak": 32, "active_bytes.all.current": 5, "active_bytes.all.peak": 9,
             "inactive_split_bytes.all.current": 1, "inactive_split_bytes.all.peak": 2, "num_alloc_retries": 0, "num_ooms": 1}  # fmt: skip
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (60, 100))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: stats)
    report = memory("cuda:0")
    assert report["cuda"] == {
        "system": {"free": 60, "used": 40, "total": 100},
        "active": {"current": 5, "peak": 9},
        "allocated": {"current": 5, "peak": 9},
        "reserved": {"current": 16, "peak": 32},
        "inactive": {"current": 1, "peak": 2},
        "events": {"retries": 0, "oom": 1},
    }
    assert set(report["ram"]) == {"free", "used", "total"}
