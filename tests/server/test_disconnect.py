"""Jobs of clients that disconnect, against a real uvicorn server: skipped before they start,
stopped between steps once running; the other jobs are untouched."""

import json
import time

from live_server import LiveServer, http_post, read_response
from server_helpers import StepGate

from ldm.server.a1111 import Job
from ldm.settings import Settings

NOTICED = 1.0  # seconds: the handler asks every 0.25 s whether its client is still there


def record_steps(worker) -> list[int]:
    steps, at_step = [], worker.progress.at_step

    def record(index, total, latents):
        steps.append(index)
        at_step(index, total, latents)

    worker.progress.at_step = record
    return steps


def test_a_running_job_stops_at_the_next_step_when_its_client_leaves(worker):
    gate = StepGate(worker, step=1)
    steps = record_steps(worker)
    with LiveServer(worker) as server:
        client = server.connect()
        client.sendall(http_post("/sdapi/v1/txt2img", json.dumps({"prompt": "x", "steps": 50, "seed": 1}).encode()))
        assert gate.reached.wait(30)
        client.close()
        time.sleep(NOTICED)
        gate.release.set()
        other = server.connect()  # the worker is free for the next client at once
        other.sendall(http_post("/sdapi/v1/txt2img", json.dumps({"prompt": "x", "steps": 2, "seed": 1}).encode()))
        status, body = read_response(other)
        other.close()
    assert status == 200 and len(json.loads(body)["images"]) == 1
    assert steps[: steps.index(0, 1)] == [0, 1], "the abandoned job ran on after its client left"


def test_a_queued_job_whose_client_left_never_starts(worker):
    gate = StepGate(worker, step=0)
    with LiveServer(worker) as server:
        first = worker.generate(Job("txt2img", Settings(prompt="x", steps=2, seed=1)))
        assert gate.reached.wait(30)
        client = server.connect()
        client.sendall(http_post("/sdapi/v1/txt2img", json.dumps({"prompt": "x", "steps": 2}).encode()))
        deadline = time.monotonic() + 10
        while worker.queued < 1:
            assert time.monotonic() < deadline, "the request never reached the queue"
            time.sleep(0.01)
        client.close()
        time.sleep(NOTICED)
        gate.release.set()
        assert len(first.result(30).result.images) == 1
        third = worker.generate(Job("txt2img", Settings(prompt="x", steps=2, seed=1)))
        assert len(third.result(30).result.images) == 1
    assert worker.progress.jobs_done == 2  # the first and the third: the second was skipped
