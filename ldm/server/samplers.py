"""AUTOMATIC1111's sampler and scheduler names <-> ours."""

from __future__ import annotations

from typing import Optional

from ldm.diffusion.samplers import SAMPLER_NAMES
from ldm.settings import GenerationError

# A1111 name -> (ours, A1111's aliases). Before 1.9 A1111 folded the Karras schedule into the
# sampler's name; from 1.9 on it sends `scheduler: "Karras"` beside "DPM++ 2M".
A1111_SAMPLERS = {
    "Euler a": ("euler-a", ["k_euler_a", "k_euler_ancestral"]),
    "Euler": ("euler", ["k_euler"]),
    "DDIM": ("ddim", []),
    "DDPM": ("ddpm", []),
    "DPM++ 2M": ("dpm++2m", ["k_dpmpp_2m"]),
    "DPM++ 2M Karras": ("dpm++2m-karras", ["k_dpmpp_2m_ka"]),
    "Heun": ("heun", ["k_heun"]),
    "UniPC": ("unipc", []),
    "LCM": ("lcm", []),
    # Flow models' solvers (no A1111 names of their own: ours, spelled as A1111 spells the rest).
    "Euler (flow)": ("flow-euler", []),
    "Heun (flow)": ("flow-heun", []),
    "DPM++ 2M (flow)": ("flow-dpm++2m", []),
    "UniPC (flow)": ("flow-unipc", []),
}
OURS_TO_A1111 = {ours: name for name, (ours, _) in A1111_SAMPLERS.items()}
# The samplers that the "Karras" schedule turns into another of ours.
KARRAS = {"dpm++2m": "dpm++2m-karras", "dpm++2m-karras": "dpm++2m-karras"}
# Schedulers that leave the sampler's own schedule as it is.
DEFAULT_SCHEDULERS = {"", "automatic"}
SCHEDULERS = ("Automatic", "Karras")

_BY_LOWER_NAME = {
    spelling.lower(): ours
    for name, (ours, aliases) in A1111_SAMPLERS.items()
    for spelling in (name, *aliases, ours)
}
assert set(OURS_TO_A1111) == set(SAMPLER_NAMES), "every sampler of ours needs an A1111 name"


def sampler_from_a1111(name: Optional[str], scheduler: Optional[str]) -> Optional[str]:
    """Our sampler for A1111's `sampler_name` (its names, aliases or ours, any case) and
    `scheduler`; None when neither is given (the default sampler)."""
    ours = None
    if name is not None:
        ours = _BY_LOWER_NAME.get(name.strip().lower())
        if ours is None:
            known = ", ".join(A1111_SAMPLERS)
            raise GenerationError(f"unknown sampler_name {name!r}; known samplers: {known}")
    chosen = (scheduler or "").strip().lower()
    if chosen in DEFAULT_SCHEDULERS:
        return ours
    if chosen != "karras":
        raise GenerationError(f"unknown scheduler {scheduler!r}; known schedulers: {', '.join(SCHEDULERS)}")
    if ours is None or ours not in KARRAS:
        raise GenerationError(f"scheduler 'Karras' works only with sampler 'DPM++ 2M', not {name!r}")
    return KARRAS[ours]


def sampler_list() -> list[dict]:
    """GET /sdapi/v1/samplers, in A1111's layout."""
    return [{"name": name, "aliases": aliases + [ours], "options": {}} for name, (ours, aliases) in A1111_SAMPLERS.items()]


def scheduler_list() -> list[dict]:
    """GET /sdapi/v1/schedulers, in A1111's (>= 1.9) layout."""
    return [{"name": label.lower(), "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False} for label in SCHEDULERS]
