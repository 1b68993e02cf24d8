"""What AUTOMATIC1111 clients ask about the server before they send work, answered in A1111's
shapes with what is true here: /sdapi/v1/memory, /sdapi/v1/scripts, /sdapi/v1/sd-vae,
/sdapi/v1/cmd-flags and the ControlNet extension's /controlnet/version."""

from __future__ import annotations

import os
from typing import Any, Optional

# The ControlNet extension's API version whose unit layout we read ("image", "module", "model",
# "weight", "guidance_start", "guidance_end", "enabled"); clients check it before sending units.
CONTROLNET_API_VERSION = 2
# How A1111 lists the ControlNet extension among its scripts (a script's name is its lowercased title).
CONTROLNET_SCRIPT = "controlnet"


def memory(device: Any) -> dict:
    """{"ram": this process's memory, "cuda": the GPU's, or {"error": ...}} as A1111 reports them:
    ram in bytes (used: the server's resident size; free: what the system has available)."""
    import psutil
    import torch

    system = psutil.virtual_memory()
    ram = {"free": system.available, "used": psutil.Process(os.getpid()).memory_info().rss, "total": system.total}
    device = torch.device(device)
    if device.type != "cuda":
        return {"ram": ram, "cuda": {"error": "unavailable" if not torch.cuda.is_available() else f"the model is on {device}"}}
    return {"ram": ram, "cuda": _cuda_memory(device)}


def _cuda_memory(device) -> dict:
    import torch

    free, total = torch.cuda.mem_get_info(device)
    stats = torch.cuda.memory_stats(device)

    def pair(name: str) -> dict:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }


def scripts(has_controlnets: bool) -> dict:
    """The scripts a request's alwayson_scripts can use: ControlNet units, when the model has ControlNets."""
    names = [CONTROLNET_SCRIPT] if has_controlnets else []
    return {"txt2img": names, "img2img": list(names)}


def command_flags(flags: Optional[dict]) -> dict:
    """ldm-serve's command line as A1111 reports its own (flag name -> value); the API key never:
    only whether one is set."""
    shown = dict(flags or {})
    if "api_key" in shown:
        shown["api_key"] = "(set, not shown)" if shown["api_key"] else None
    return shown
