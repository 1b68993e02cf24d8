"""The server refuses a request whose steps would take too long (ldm.pipeline.step_time)
with a 400 naming the size that fits, before it is queued."""

from server_helpers import make_client

from ldm.pipeline import Pipeline
from ldm.pipeline.step_time import step_seconds
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import Limits


def test_a_request_whose_steps_take_too_long_is_a_400(tiny_components, tiny_model_dir):
    pipeline = Pipeline(tiny_components)
    entry = ModelEntry("tiny-model", tiny_model_dir)
    limits = Limits(max_pixels=64 * 64, max_step_seconds=2 * step_seconds(pipeline, 32, 32, guided=True))
    worker = Worker(pipeline, entry, [entry], Pipeline.load, limits, max_queue=2)
    try:
        with make_client(worker) as client:
            request = {"prompt": "a lake", "steps": 1, "seed": 0}
            assert client.post("/sdapi/v1/txt2img", json=request).status_code == 200
            answer = client.post("/sdapi/v1/txt2img", json={**request, "width": 64, "height": 64})
            assert answer.status_code == 400, answer.text
            assert answer.json()["detail"].startswith("one denoising step at 64x64 is about ")
            assert "draw at 32x32 or smaller" in answer.json()["detail"]
            assert worker.queued == 0
    finally:
        worker.close()
