"""Wall-clock sections, for timing breakdowns (`ldm-generate --timings`, benchmarks)."""

from __future__ import annotations

import sys
import time


class Stopwatch:
    """Adds the seconds since the last lap to `sections[name]` (a dict it may share)."""

    def __init__(self, sections: dict[str, float] | None = None):
        self.sections = sections if sections is not None else {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        # Only synchronise a GPU that is already in use (importing torch here would cost time).
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.sections[name] = self.sections.get(name, 0.0) + now - self._start
        self._start = now

    def report(self) -> str:
        total = sum(self.sections.values())
        parts = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.sections.items())
        return f"time: {total:.2f}s ({parts})"
