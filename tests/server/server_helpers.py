"""Helpers of the server tests: base64 images, a job held mid-run, a request on a thread."""

import base64
import io
import threading

from fastapi.testclient import TestClient
from PIL import Image

from ldm.server.app import ServerOptions, create_app
from ldm.settings import Limits

# The limits of the test server (conftest's worker): 64x64 images at most.
TEST_LIMITS = Limits(max_pixels=64 * 64, max_steps=2000, max_images=8)


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def open_b64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


class StepGate:
    """Holds the worker after a given sampling step until released: a job caught mid-run."""

    def __init__(self, worker, step: int, iteration: int = 0):
        self.reached, self.release = threading.Event(), threading.Event()
        at_step, at_iteration = worker.progress.at_step, worker.progress.at_iteration
        self.iteration = 0

        def track_iteration(index):
            self.iteration = index
            at_iteration(index)

        def hold(index, total, latents):
            at_step(index, total, latents)
            if index == step and self.iteration == iteration and not self.reached.is_set():
                self.reached.set()
                assert self.release.wait(30), "the test never released the worker"

        worker.progress.at_step, worker.progress.at_iteration = hold, track_iteration


def in_thread(call):
    """Runs `call()` on a thread; returns a function that waits for its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(value=call()), daemon=True)
    thread.start()

    def result(timeout=60):
        thread.join(timeout)
        assert not thread.is_alive(), "the request did not finish"
        return box["value"]

    return result


def make_client(worker, **options):
    return TestClient(create_app(worker, ServerOptions(**options)), raise_server_exceptions=False)

