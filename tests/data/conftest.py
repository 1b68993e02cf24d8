"""Folders of tiny images in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fixtures import messy_images, noise_image, write_image


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Every kind of trouble, each image with a sidecar caption 'caption of NAME'."""
    root = tmp_path / "messy"
    root.mkdir()
    for name, (data, _, _) in messy_images().items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text(f"caption of {name}")
    return root


@pytest.fixture
def sidecar_folder(tmp_path) -> Path:
    """12 good images in two subfolders, captions 'caption N' in sidecar files."""
    root = tmp_path / "sidecar"
    for n in range(12):
        image = write_image(root / f"part{n % 2}" / f"img{n:02d}.jpg", noise_image(seed=n))
        image.with_suffix(".txt").write_text(f"caption {n}\n")
    return root
