"""A server on a tiny model, driven in-process through FastAPI's TestClient."""

import pytest
import torch
from server_helpers import TEST_LIMITS, make_client
from tiny import tiny_model_dict

from ldm.pipeline import Pipeline
from ldm.server.worker import ModelEntry, Worker


@pytest.fixture
def other_model_dir(tmp_path):
    """A second tiny model, named "other", to switch to."""
    from ldm.config import model_config_from_dict
    from ldm.formats.model_folder import save_model
    from ldm.models.components import build_components

    torch.manual_seed(1)
    components = build_components(model_config_from_dict(tiny_model_dict(name="other"))).eval()
    return save_model(components, tmp_path / "other-model")


@pytest.fixture
def worker(tiny_components, tiny_model_dir, other_model_dir):
    entries = [ModelEntry("tiny-model", tiny_model_dir), ModelEntry("other-model", other_model_dir)]
    worker = Worker(Pipeline(tiny_components), entries[0], entries, Pipeline.load, TEST_LIMITS, max_queue=2)
    yield worker
    worker.close()


@pytest.fixture
def client(worker):
    with make_client(worker) as client:
        yield client


@pytest.fixture
def backbone() -> str:
    """The server is backbone-agnostic; its tests run on the U-Net only (time)."""
    return "unet"
