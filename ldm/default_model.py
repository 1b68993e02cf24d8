"""The demo model shipped inside the package (trained by the project on its own scenes data)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "scenes"


def default_model_path() -> Path | None:
    """The built-in model folder, or None when this install carries no weights."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model.yaml").is_file() else None
