"""Counters of what the data layer saw, converted and skipped, readable from any process.

DataLoader workers are separate processes, so the counters live in a shared-memory
tensor: one row per worker (row 0 for the main process), each row written by one process
only, so no increments are lost; the totals are the sum over rows.
"""

from __future__ import annotations

import torch

CONVERSIONS = (
    "CMYK->RGB",
    "16-bit->8-bit",
    "float->8-bit",
    "RGBA->RGB",
    "greyscale->RGB",
    "palette->RGB",
    "colour space->RGB",
)
SKIP_REASONS = ("unreadable", "truncated", "too small", "too large", "no caption", "unreadable shard", "excluded")
COUNTERS = ("seen", *CONVERSIONS, *SKIP_REASONS)
MAX_WORKERS = 64  # workers beyond this share rows (their counts may then race)


def _worker_row() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % MAX_WORKERS


class DataStats:
    """How many samples were seen, converted to 8-bit RGB (by reason) and skipped (by reason).

    `seen` counts every sample looked at, skipped ones included."""

    def __init__(self) -> None:
        self._counts = torch.zeros(1 + MAX_WORKERS, len(COUNTERS), dtype=torch.int64).share_memory_()

    def record(self, converted: str | None = None, skipped: str | None = None) -> None:
        """One sample seen, with at most one conversion or skip reason."""
        row = self._counts[_worker_row()]
        row[0] += 1
        for reason in (converted, skipped):
            if reason is not None:
                row[COUNTERS.index(reason)] += 1

    def record_excluded(self, count: int) -> None:
        """`count` samples that data.exclude names: seen (by name), skipped unread."""
        row = self._counts[_worker_row()]
        row[0] += count
        row[COUNTERS.index("excluded")] += count

    def record_skipped_shard(self) -> None:
        """A shard that could not be read at all: its samples are unknown, so not `seen`."""
        self._counts[_worker_row(), COUNTERS.index("unreadable shard")] += 1

    def totals(self) -> torch.Tensor:
        """All counters as one vector (len(COUNTERS),), e.g. to sum over processes."""
        return self._counts.sum(dim=0)

    @classmethod
    def from_totals(cls, totals: torch.Tensor) -> "DataStats":
        stats = cls()
        stats._counts[0] = totals.to(torch.int64).cpu()
        return stats

    @property
    def seen(self) -> int:
        return int(self.totals()[0])

    @property
    def converted(self) -> dict[str, int]:
        return self._nonzero(CONVERSIONS)

    @property
    def skipped(self) -> dict[str, int]:
        return self._nonzero(SKIP_REASONS)

    def _nonzero(self, names: tuple[str, ...]) -> dict[str, int]:
        totals = self.totals()
        counts = {name: int(totals[COUNTERS.index(name)]) for name in names}
        return {name: count for name, count in counts.items() if count}

    def summary(self) -> str:
        """One line: '1200 images, 3 converted (2 CMYK->RGB, 1 RGBA->RGB), 2 skipped (...)'."""
        parts = [f"{self.seen} images"]
        for label, counts in (("converted", self.converted), ("skipped", self.skipped)):
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{sum(counts.values())} {label}" + (f" ({detail})" if detail else ""))
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"DataStats({self.summary()})"
