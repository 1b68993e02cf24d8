"""The ControlNets a pipeline can use: a model folder's own (controlnet/<name>/) and those
given by path (--controlnet DIR), and which one serves a control unit. Listing reads only
control.json; weights load on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ldm.control.fit import controlnet_mismatch
from ldm.control.model import control_type_of, is_controlnet_folder, load_controlnet
from ldm.control.units import ControlUnit
from ldm.files import recover_folder, recover_folders
from ldm.formats.model_folder import ModelError
from ldm.settings import GenerationError

FOLDER = "controlnet"  # inside a model folder: controlnet/<name>/


@dataclass
class ControlNetEntry:
    name: str
    type: Optional[str]  # the control type it was trained for; None: not recorded (a plain diffusers folder)
    path: Optional[Path] = None
    model: Any = field(default=None, repr=False)  # the ControlNetModel, once loaded

    def load(self, device, dtype):
        if self.model is None:
            self.model = load_controlnet(self.path, device, dtype)
        return self.model

    def describe(self) -> str:
        return f"{self.name} ({self.type or 'type not recorded'})"


class ControlNets:
    def __init__(self, entries: Iterable[ControlNetEntry] = ()):
        self.entries = list(entries)

    @classmethod
    def for_model(cls, model_path: str | Path | None, extra: Sequence[str | Path] = ()) -> "ControlNets":
        """The model folder's ControlNets, then the `extra` folders (each a ControlNet folder)."""
        entries = []
        own = Path(model_path) / FOLDER if model_path is not None else None
        if own is not None and own.is_dir():
            recover_folders(own)  # saves killed mid-swap left some aside
            for folder in sorted(p for p in own.iterdir() if is_controlnet_folder(p)):
                entries.append(ControlNetEntry(folder.name, control_type_of(folder), folder))
        for folder in map(recover_folder, extra):
            if not is_controlnet_folder(folder):
                raise GenerationError(f"{folder} is not a ControlNet folder (no config.json)")
            entries.append(ControlNetEntry(folder.name, control_type_of(folder), folder))
        return cls(entries)

    @classmethod
    def of(cls, **models) -> "ControlNets":
        """From loaded ControlNetModels by name: ControlNets.of(canny=("canny", model))."""
        return cls(ControlNetEntry(name, kind, None, model) for name, (kind, model) in models.items())

    def named(self, name: str) -> ControlNetEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise GenerationError(f"no ControlNet named {name!r}; {self.inventory()}")

    def inventory(self) -> str:
        if not self.entries:
            return "the model has no ControlNet (give one with --controlnet DIR)"
        return "the model has: " + ", ".join(entry.describe() for entry in self.entries)

    def serving(self, unit: ControlUnit) -> ControlNetEntry:
        """The ControlNet for `unit`: the one it names; else the one trained for its type, else
        the one whose type is not recorded; `raw` maps may go to any (when only one is there)."""
        if unit.model is not None:
            return self.named(unit.model)
        fits = [entry for entry in self.entries if entry.type == unit.type]
        if not fits:
            fits = [entry for entry in self.entries if entry.type is None or unit.type == "raw"]
        if len(fits) == 1:
            return fits[0]
        if not fits:
            raise GenerationError(f"no ControlNet for control type {unit.type!r}; {self.inventory()}")
        names = ", ".join(entry.name for entry in fits)
        raise GenerationError(f"several ControlNets fit control type {unit.type!r} ({names}): name one with --control-model")

    def resolve(self, units: Sequence[ControlUnit]) -> tuple[ControlUnit, ...]:
        """`units`, each naming the ControlNet that serves it (as the PNG parameters record)."""
        from dataclasses import replace

        return tuple(replace(unit, model=self.serving(unit).name) for unit in units)

    def load_for(self, units: Sequence[ControlUnit], components) -> None:
        """Loads the ControlNet serving each unit onto the model's device and checks that it
        fits the model: an unreadable folder or one made for another model is a
        GenerationError now, not a traceback once sampling has begun."""
        for unit in units:
            entry = self.serving(unit)
            try:
                net = entry.load(components.device, components.dtype)
            except ModelError as error:
                raise GenerationError(str(error)) from None
            problem = controlnet_mismatch(net.config, components)
            if problem:
                raise GenerationError(f"ControlNet {entry.name} does not fit this model: {problem}")
