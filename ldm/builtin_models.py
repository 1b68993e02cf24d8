"""Models shipped inside the package, by name. A path that exists always wins over a name.

To add one: put its model folder under ldm/weights/ (package data) and add a line below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldm.errors import LdmError
from ldm.files import recover_folder

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class BuiltinModel:
    folder: str  # under ldm/weights/
    draws: str  # what it draws, one line

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.folder


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "scenes": BuiltinModel("scenes", "simple landscapes at 128 px: a lake, meadow, desert or snowfield at dawn, noon, dusk or night"),
    # Shares scenes' VAE and text encoder (model.yaml parts_from): only its U-Net is its own.
    "scenes-lcm": BuiltinModel("scenes-lcm", "scenes distilled to 4 steps (--sampler lcm, one U-Net call per step)"),
    # A DiT trained with flow matching on the same scenes, VAE and text encoder (shared, as above):
    # better held-out times of day than scenes; ControlNets and LoRAs here are U-Net ones.
    "scenes-flow": BuiltinModel("scenes-flow", "scenes by a flow-matching DiT: 89% seen / 85% held-out attributes (scenes: 88% / 73%)"),
}
DEFAULT_MODEL = "scenes"
# The upscaler `ldm-upscale` and `ldm-generate --upscale` use when none is named (issue 26
# ships it: 128 -> 512 px scenes); until it is installed they need a name or a folder.
DEFAULT_UPSCALER = "scenes-upscaler"


class UnknownModelError(LdmError, LookupError):
    """Neither an existing path nor an installed built-in model's name."""


def is_installed(name: str) -> bool:
    return name in BUILTIN_MODELS and (BUILTIN_MODELS[name].path / "model.yaml").is_file()


def resolve_model(name_or_path: str | Path | None) -> Path:
    """An existing path as it is; else the folder of the built-in model of that name;
    None: the default built-in model."""
    if name_or_path is None:
        if not is_installed(DEFAULT_MODEL):
            raise UnknownModelError("this install carries no built-in model: give a model folder")
        return BUILTIN_MODELS[DEFAULT_MODEL].path
    path = recover_folder(name_or_path)  # a save killed mid-swap left it aside: put back
    if path.exists():
        return path
    if is_installed(str(name_or_path)):
        return BUILTIN_MODELS[str(name_or_path)].path
    installed = [name for name in BUILTIN_MODELS if is_installed(name)]
    names = ", ".join(installed) if installed else "none installed"
    raise UnknownModelError(f"model folder not found: {name_or_path}, nor is it a built-in model ({names})")


def resolve_upscaler(name_or_path: str | Path | None) -> Path:
    """As resolve_model, with the built-in upscaler as the default."""
    if name_or_path is None and not is_installed(DEFAULT_UPSCALER):
        raise UnknownModelError("no built-in upscaler is installed: name an upscaler model folder")
    return resolve_model(DEFAULT_UPSCALER if name_or_path is None else name_or_path)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_models() -> str:
    """One line per installed built-in model: name, size on disk, what it draws."""
    rows = []
    for name, model in BUILTIN_MODELS.items():
        if is_installed(name):
            default = " (default)" if name == DEFAULT_MODEL else ""
            rows.append(f"{name + default:<18} {folder_size(model.path) / 2**20:6.1f} MiB  {model.draws}")
    return "\n".join(rows) if rows else "no built-in models installed"
