"""Conditionings that take turns during one sampling run: what prompt editing (`[a:b:0.5]`)
and alternation (`[a|b]`) make of a prompt.

A schedule is A1111's list of (last step, conditioning): model evaluation i of the run (counted
from 0, as the loop calls the model, in the run as it is: img2img's shortened run starts at 0)
is conditioned by the first entry whose last step is >= i, and the last entry conditions every
evaluation after its own last step too. A plain Conditioning is a schedule of one entry.
Guidance pairs the prompt's schedule with the negative prompt's, step by step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from ldm.diffusion.conditioning import Conditioning

FOREVER = 2**62  # the last step of a conditioning that never changes


@dataclass(frozen=True)
class ConditioningSchedule:
    entries: tuple[tuple[int, Conditioning], ...]  # (last step, conditioning), last steps increasing

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a conditioning schedule needs at least one entry")

    @classmethod
    def of(cls, cond: Union[Conditioning, "ConditioningSchedule"]) -> "ConditioningSchedule":
        """`cond` itself if it is a schedule, else the schedule that is `cond` at every step."""
        return cond if isinstance(cond, ConditioningSchedule) else cls(((FOREVER, cond),))

    def at(self, step: int) -> Conditioning:
        for last, cond in self.entries:
            if step <= last:
                return cond
        return self.entries[-1][1]

    @property
    def first(self) -> Conditioning:
        return self.entries[0][1]

    def __len__(self) -> int:
        return len(self.first)  # the batch

    def map(self, fn: Callable[[Conditioning], Conditioning]) -> "ConditioningSchedule":
        return ConditioningSchedule(tuple((last, fn(cond)) for last, cond in self.entries))

    def replace(self, **changes) -> "ConditioningSchedule":
        """Every entry with the same changes (the image-side conditions a task adds)."""
        return self.map(lambda cond: cond.replace(**changes))


def paired(
    a: ConditioningSchedule, b: ConditioningSchedule, fn: Callable[[Conditioning, Conditioning], Conditioning]
) -> ConditioningSchedule:
    """One schedule of fn(a at the step, b at the step), changing wherever either changes."""
    steps = sorted({last for last, _ in a.entries} | {last for last, _ in b.entries})
    return ConditioningSchedule(tuple((step, fn(a.at(step), b.at(step))) for step in steps))


def token_count(schedule: ConditioningSchedule) -> int:
    """The most tokens (L of tokens (B, L, D)) any entry has."""
    return max(cond.tokens.shape[1] for _, cond in schedule.entries)


def padded(schedule: ConditioningSchedule, length: int, filler: Conditioning) -> ConditioningSchedule:
    """Every entry's tokens extended to `length` with copies of `filler`'s tokens (1, l, D)
    (an empty prompt's chunk: what A1111 pads a shorter prompt or negative prompt with)."""

    def extend(cond: Conditioning) -> Conditioning:
        missing = length - cond.tokens.shape[1]
        if missing == 0:
            return cond
        copies, rest = divmod(missing, filler.tokens.shape[1])
        if rest or cond.mask is not None:
            raise ValueError(f"cannot pad {cond.tokens.shape[1]} tokens to {length} with chunks of {filler.tokens.shape[1]}")
        extra = filler.tokens.to(cond.tokens).expand(len(cond), -1, -1).repeat(1, copies, 1)  # (B, missing, D)
        return cond.replace(tokens=torch.cat([cond.tokens, extra], dim=1))  # (B, length, D)

    return schedule.map(extend)
