"""A control unit: one control image and how strongly, and when, it steers the denoiser.
Light on purpose (no torch): ldm.settings checks units before anything is loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

# The names of the preprocessors (ldm.control.preprocessors.PREPROCESSORS), without importing them.
CONTROL_TYPES = ("canny", "layout", "raw")
DEFAULT_CONTROL_TYPE = "raw"


@dataclass(frozen=True)
class ControlUnit:
    image: Any  # a PIL image (the picture the preprocessor reads)
    type: str = DEFAULT_CONTROL_TYPE  # preprocessor name: canny | layout | raw
    scale: float = 1.0  # weight of the ControlNet's residuals
    start: float = 0.0  # fraction of the steps before the ControlNet joins
    end: float = 1.0  # fraction of the steps after which it stops
    model: Optional[str] = None  # ControlNet name; None: the one made for `type` (filled in by the pipeline)

    def png_value(self) -> str:
        """The value AUTOMATIC1111's ControlNet extension writes for a unit."""
        module = "none" if self.type == "raw" else self.type
        return (
            f"Module: {module}, Model: {self.model or 'None'}, Weight: {self.scale:g}, "
            f"Guidance Start: {self.start:g}, Guidance End: {self.end:g}"
        )


def check_control_units(units: Sequence[ControlUnit]) -> None:
    """ValueError naming the first bad value of the first bad unit."""
    for k, unit in enumerate(units):
        where = f"control {k}" if len(units) > 1 else "control"
        if unit.type not in CONTROL_TYPES:
            raise ValueError(f"{where}: unknown control type {unit.type!r}; known types: {', '.join(CONTROL_TYPES)}")
        if not math.isfinite(unit.scale) or unit.scale < 0:
            raise ValueError(f"{where}: control scale must be a finite number >= 0, got {unit.scale:g}")
        for name in ("start", "end"):
            value = getattr(unit, name)
            if not 0.0 <= value <= 1.0:  # NaN fails this too
                raise ValueError(f"{where}: control {name} must be between 0 and 1, got {value:g}")
        if unit.start > unit.end:
            raise ValueError(f"{where}: control start ({unit.start:g}) is after its end ({unit.end:g})")


def png_fields(units: Sequence[ControlUnit]) -> dict[str, str]:
    return {f"ControlNet {k}": unit.png_value() for k, unit in enumerate(units)}


def active_weight(step: int, total: int, start: float, end: float) -> float:
    """1 while step `step` of `total` lies in the [start, end] window, else 0 (diffusers' rule)."""
    return 0.0 if step / total < start or (step + 1) / total > end else 1.0
