"""An SD3 folder behind the A1111 API: txt2img (the model's own flow sampler when the request
names none) and img2img draw what the Python API draws."""

import json

import numpy as np
from PIL import Image
from sd3_folder import write_tiny_sd3_folder
from server_helpers import make_client, open_b64, png_b64

from ldm.pipeline import Pipeline
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import DEFAULT_LIMITS

REQUEST = {"prompt": "a lake", "seed": 5, "steps": 2, "cfg_scale": 5.0, "width": 32, "height": 32}


def test_an_sd3_folder_draws_txt2img_and_img2img_through_the_api(tmp_path):
    folder = write_tiny_sd3_folder(tmp_path)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    entry = ModelEntry("sd3", folder)
    worker = Worker(Pipeline.load(folder), entry, [entry], Pipeline.load, DEFAULT_LIMITS, max_queue=2)
    try:
        with make_client(worker) as client:
            drawn = client.post("/sdapi/v1/txt2img", json=REQUEST)
            edited = client.post("/sdapi/v1/img2img", json={**REQUEST, "sampler_name": "Euler (flow)", "init_images": [png_b64(photo)],
                                                            "denoising_strength": 0.6})  # fmt: skip
    finally:
        worker.close()
    assert drawn.status_code == edited.status_code == 200, drawn.text + edited.text
    assert json.loads(drawn.json()["info"])["sampler_name"] == "Euler (flow)"
    pipe = Pipeline.load(folder)
    options = dict(seed=5, steps=2, cfg=5.0, width=32, height=32, progress=False)
    for response, expected in ((drawn, pipe.generate("a lake", **options)), (edited, pipe.img2img("a lake", photo, 0.6, **options))):
        image = np.asarray(open_b64(response.json()["images"][0]).convert("RGB"))
        # Within one level: the worker thread may sum in another order (as tests/server's webuiapi test allows).
        assert np.abs(image.astype(int) - np.asarray(expected.images[0]).astype(int)).max() <= 1
