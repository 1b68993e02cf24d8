"""A1111's refiner_checkpoint and refiner_switch_at: an SDXL refiner among the server's models
draws the last steps of txt2img and img2img requests as the Python API does with that folder;
a name that is not a listed refiner is a 400 in one line."""

import json

import numpy as np
import pytest
from sdxl_folder import write_tiny_refiner_folder, write_tiny_sdxl_folder
from server_helpers import make_client, open_b64, png_b64
from test_bad_input import check_refused
from test_sdxl_inpaint import picture

from ldm.pipeline import Pipeline
from ldm.server.a1111 import Txt2ImgRequest, job_from_request
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import DEFAULT_LIMITS, GenerationError

REQUEST = {"prompt": "a lake", "seed": 5, "steps": 4, "cfg_scale": 5.0, "sampler_name": "Euler", "width": 32, "height": 32}


@pytest.fixture(scope="module")
def sdxl_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner-api")
    base, refiner = write_tiny_sdxl_folder(root), write_tiny_refiner_folder(root)
    entries = [ModelEntry("base", base), ModelEntry(refiner.name, refiner)]  # titled as ldm-serve titles them
    worker = Worker(Pipeline.load(base), entries[0], entries, Pipeline.load, DEFAULT_LIMITS, max_queue=2)
    with make_client(worker) as client:
        yield client, base, refiner
    worker.close()


def as_array(answer) -> np.ndarray:
    return np.asarray(open_b64(answer.json()["images"][0]).convert("RGB")).astype(int)


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
def test_a_refiner_checkpoint_draws_as_the_python_api(sdxl_server, route):
    client, base, refiner = sdxl_server
    body, photo = {**REQUEST, "refiner_checkpoint": refiner.name, "refiner_switch_at": 0.6}, picture(32, 32)
    if route == "img2img":
        body = {**body, "init_images": [png_b64(photo)], "denoising_strength": 0.8}
    answer = client.post(f"/sdapi/v1/{route}", json=body)
    assert answer.status_code == 200, answer.text
    options = dict(seed=5, steps=4, cfg=5.0, sampler="euler", width=32, height=32, progress=False, refiner=str(refiner), refiner_switch=0.6)
    pipe = Pipeline.load(base)
    expected = pipe.generate("a lake", **options) if route == "txt2img" else pipe.img2img("a lake", photo, 0.8, **options)
    # Within one level: the worker thread may sum in another order (as tests/server's webuiapi test allows).
    assert np.abs(as_array(answer) - np.asarray(expected.images[0]).astype(int)).max() <= 1
    extra = json.loads(answer.json()["info"])["extra_generation_params"]
    assert extra["Refiner"] == refiner.name and extra["Refiner switch at"] == "0.6"


@pytest.mark.parametrize(("name", "message"), [
    ("sdxl-turbo", "unknown refiner_checkpoint 'sdxl-turbo'; known models: base, sdxl-refiner-tiny"),
    ("base", "refiner_checkpoint 'base' is not an SDXL refiner"),
])  # fmt: skip
def test_a_name_that_is_not_a_listed_refiner_is_refused(sdxl_server, name, message):
    client = sdxl_server[0]
    check_refused(client.post("/sdapi/v1/txt2img", json={**REQUEST, "refiner_checkpoint": name}), 400, message)


@pytest.mark.parametrize("none", [None, "", "None"])
def test_no_refiner_ignores_the_switch_as_a1111(tmp_path, none):
    models = {"refiner-xl": tmp_path}
    request = Txt2ImgRequest(prompt="a lake", refiner_checkpoint=none, refiner_switch_at=0.5)
    job = job_from_request(request, DEFAULT_LIMITS, models=models)
    assert job.settings.refiner is None and job.settings.refiner_switch is None


def test_a_refiner_title_with_an_a1111_hash_is_found(sdxl_server):
    _, _, refiner = sdxl_server
    request = Txt2ImgRequest(prompt="a lake", refiner_checkpoint="refiner-xl [7440042bbd]")
    assert job_from_request(request, DEFAULT_LIMITS, models={"refiner-xl": refiner}).settings.refiner == str(refiner)
    with pytest.raises(GenerationError, match="unknown refiner_checkpoint"):
        job_from_request(request, DEFAULT_LIMITS, models={})
