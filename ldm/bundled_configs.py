"""The training configs shipped inside the package (ldm/configs; the repository's configs/
is a link to it), found by name: `text2img.yaml`, `cpu/text2img`, `scenes/autoencoder.yaml`.

No heavy imports: `ldm-train --list-configs` must answer at once."""

from __future__ import annotations

import difflib
from pathlib import Path

from ldm.config import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
SUFFIX = ".yaml"


def bundled_config_names() -> list[str]:
    """Names relative to the config folder, with their suffix: ['autoencoder.yaml', 'cpu/clip.yaml', ...]."""
    return sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob(f"*{SUFFIX}"))


def config_purpose(path: Path) -> str:
    """The config's first comment line: every bundled config opens with its purpose."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def resolve_config_path(name: str | Path) -> Path:
    """An existing file wins; else the bundled config of that name (the suffix optional)."""
    path = Path(name)
    if path.is_file():
        return path
    names = bundled_config_names()
    wanted = path.as_posix()
    wanted = wanted if wanted.endswith(SUFFIX) else wanted + SUFFIX
    if wanted in names:
        return CONFIG_DIR / wanted
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ConfigError(f"config not found: {name} is not a file nor a bundled config{hint} (ldm-train --list-configs)")


def list_configs() -> str:
    """One line per bundled config: its name and its purpose."""
    names = bundled_config_names()
    width = max(map(len, names))
    return "\n".join(f"{name:<{width}}  {config_purpose(CONFIG_DIR / name)}" for name in names)
