import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model_dict  # noqa: E402


@pytest.fixture
def tiny_components():
    from ldm.config import model_config_from_dict
    from ldm.models.components import build_components

    torch.manual_seed(0)
    return build_components(model_config_from_dict(tiny_model_dict())).eval()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_components):
    from ldm.checkpoint import save_model

    return save_model(tiny_components, tmp_path / "tiny-model")
