"""txt2img: from pure noise, at the requested size (the model's own by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ldm.pipeline.task import BatchContext, Plan, Start, refuse_inpainting_model, size_conditions
from ldm.settings import Limits, Settings, check_size

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


class Txt2Img:
    mode = "txt2img"

    def draw_size(self, pipe: "Pipeline", settings: Settings) -> tuple[int, int]:
        return settings.width or pipe.default_size, settings.height or pipe.default_size

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        size = self.draw_size(pipe, settings)
        check_size(*size, limits)
        refuse_inpainting_model(pipe)

        def start(pipe: "Pipeline", generators: list[torch.Generator], batch: BatchContext) -> Start:
            return Start(pipe.noise(generators, *size), vectors=size_conditions(pipe, size, len(generators)))

        return Plan(settings, size, size, start)
