"""A server on a tiny model, driven in-process through FastAPI's TestClient."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ldm.pipeline import Pipeline
from ldm.server.app import ServerOptions, create_app
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import Limits

TEST_LIMITS = Limits(max_pixels=64 * 64, max_steps=2000, max_images=8)


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def open_b64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.fixture
def worker(tiny_components, tiny_model_dir):
    entry = ModelEntry("tiny-model", tiny_model_dir)
    loaded = []

    def loader(path):
        loaded.append(path)
        return Pipeline.load(path)

    worker = Worker(Pipeline(tiny_components), entry, [entry], loader, TEST_LIMITS, max_queue=2)
    worker.loaded = loaded
    yield worker
    worker.close()


def make_client(worker, **options):
    return TestClient(create_app(worker, ServerOptions(**options)), raise_server_exceptions=False)


@pytest.fixture
def client(worker):
    with make_client(worker) as client:
        yield client
