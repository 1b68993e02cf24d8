"""The worker seen through the API while a job runs: progress, interrupt, a full queue."""

import json

from server_helpers import StepGate, in_thread, open_b64

from ldm.server.progress import latent_preview


def test_progress_during_a_job_shows_steps_and_a_preview(client, worker):
    gate = StepGate(worker, step=2)
    done = in_thread(lambda: client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "steps": 8, "n_iter": 2}))
    assert gate.reached.wait(30)
    progress = client.get("/sdapi/v1/progress").json()
    assert progress["state"]["job"] == "txt2img" and progress["state"]["job_count"] == 2
    assert (progress["state"]["sampling_step"], progress["state"]["sampling_steps"]) == (3, 8)
    assert progress["progress"] == 3 / 8 / 2 and progress["eta_relative"] >= 0
    preview = open_b64(progress["current_image"])
    assert preview.size == (16, 16) and preview.mode == "RGB"  # the latent grid, not a decode
    assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
    gate.release.set()
    assert done().status_code == 200
    assert client.get("/sdapi/v1/progress").json()["state"]["job"] == ""


def test_latent_preview_is_the_fixed_linear_map():
    import torch

    latents = torch.zeros(4, 2, 3)
    latents[0] = 1.0  # channel 0 alone: RGB = its row of the map
    preview = latent_preview(latents)
    assert preview.size == (3, 2)
    assert preview.getpixel((0, 0)) == tuple(int((v + 1) * 127.5) for v in (0.298, 0.207, 0.208))


def test_interrupt_returns_the_finished_images_and_the_ones_it_stopped_as_they_stand(client, worker):
    gate = StepGate(worker, step=1, iteration=1)
    done = in_thread(lambda: client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 4, "steps": 5, "batch_size": 2, "n_iter": 3}))
    assert gate.reached.wait(30)
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    gate.release.set()
    body = done().json()
    info = json.loads(body["info"])
    # The first batch whole, the second as it stood at step 2 of 5 (A1111 does the same); no third.
    assert len(body["images"]) == 4 and info["all_seeds"] == [4, 5, 6, 7] and info["interrupted"] is True
    assert client.get("/sdapi/v1/progress").json()["state"]["interrupted"] is True
    # The next job runs whole: an interrupt stops only the job it met.
    assert len(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2}).json()["images"]) == 1


def test_the_interrupted_image_is_the_decoded_estimate_of_the_step_it_stopped_at(client, worker):
    import numpy as np

    from ldm.images import to_pil

    request = {"prompt": "x", "seed": 3, "steps": 6, "sampler_name": "DPM++ 2M"}
    gate = StepGate(worker, step=1)
    done = in_thread(lambda: client.post("/sdapi/v1/txt2img", json=request))
    assert gate.reached.wait(30)
    client.post("/sdapi/v1/interrupt")
    gate.release.set()
    body = done().json()
    assert len(body["images"]) == 1 and json.loads(body["info"])["interrupted"] is True
    interrupted = np.asarray(open_b64(body["images"][0]).convert("RGB"), dtype=np.int16)

    seen = []
    whole = worker.pipeline.generate("x", seed=3, steps=6, sampler="dpm++2m", callback=seen.append, progress=False)
    expected = np.asarray(to_pil(worker.pipeline.decode(seen[1].predicted_x0))[0], dtype=np.int16)
    assert np.abs(interrupted - expected).max() <= 1
    assert np.abs(interrupted - np.asarray(whole.images[0], dtype=np.int16)).max() > 10  # not the finished image


def test_interrupt_with_nothing_running_does_not_touch_the_next_job(client):
    client.post("/sdapi/v1/interrupt")
    assert len(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2}).json()["images"]) == 1


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(client, worker):
    gate = StepGate(worker, step=0)
    request = {"prompt": "x", "steps": 2}
    running = in_thread(lambda: client.post("/sdapi/v1/txt2img", json=request))
    assert gate.reached.wait(30)
    queued = [in_thread(lambda: client.post("/sdapi/v1/txt2img", json=request)) for _ in range(2)]
    while worker.queued < 2:  # max_queue=2 in the fixture
        pass
    refused = client.post("/sdapi/v1/txt2img", json=request)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "busy" in refused.json()["detail"]
    assert client.get("/sdapi/v1/progress").json()["queued"] == 2
    gate.release.set()
    assert [each().status_code for each in [running, *queued]] == [200, 200, 200]


def test_a_job_whose_client_left_before_it_started_is_skipped(worker):
    gate = StepGate(worker, step=0)
    from ldm.server.a1111 import Job
    from ldm.settings import Settings

    first = worker.generate(Job("txt2img", Settings(prompt="x", steps=2, seed=1)))
    assert gate.reached.wait(30)
    second = worker.generate(Job("txt2img", Settings(prompt="x", steps=2, seed=1)))
    assert second.cancel()  # what asyncio does to the future when the request is cancelled
    gate.release.set()
    assert len(first.result(30).result.images) == 1
    third = worker.generate(Job("txt2img", Settings(prompt="x", steps=2, seed=1)))
    assert len(third.result(30).result.images) == 1 and worker.progress.jobs_done == 2


def test_a_failed_switch_keeps_the_model_that_serves(client, worker, other_model_dir):
    (other_model_dir / "denoiser.safetensors").write_bytes(b"not safetensors")
    answer = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other-model"})
    assert answer.status_code == 400 and "denoiser.safetensors" in answer.json()["detail"], answer.text
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-model"
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}).status_code == 200
