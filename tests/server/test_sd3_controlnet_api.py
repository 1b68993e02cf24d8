"""An SD3 folder with an SD3 ControlNet of its own behind the A1111 API: the ControlNet
extension's unit steers txt2img and img2img as the Python API's ControlUnit does (the same
code: the pipeline's), and GET /controlnet/model_list names it."""

import numpy as np
from control.tiny_controlnets import sd3_controlnet
from PIL import Image
from sd3_folder import write_tiny_sd3_folder
from server_helpers import make_client, open_b64, png_b64

from ldm.control.model import save_controlnet
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import DEFAULT_LIMITS

def rings() -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (32, 32))
    ImageDraw.Draw(image).ellipse([4, 6, 26, 28], outline="white", width=2)
    return image


REQUEST = {"prompt": "a lake", "seed": 5, "steps": 3, "cfg_scale": 5.0, "width": 32, "height": 32}


def test_a_controlnet_unit_steers_an_sd3_model_through_the_api(tmp_path):
    folder = write_tiny_sd3_folder(tmp_path)
    save_controlnet(sd3_controlnet(), "canny", folder / "controlnet" / "edges")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    unit = {"image": png_b64(rings()), "module": "none", "model": "edges [0123abcd]", "weight": 0.7,
            "guidance_start": 0.2, "guidance_end": 0.8}  # fmt: skip
    scripts = {"alwayson_scripts": {"controlnet": {"args": [unit]}}}
    entry = ModelEntry("sd3", folder)
    worker = Worker(Pipeline.load(folder), entry, [entry], Pipeline.load, DEFAULT_LIMITS, max_queue=2)
    try:
        with make_client(worker) as client:
            listed = client.get("/controlnet/model_list").json()["model_list"]
            drawn = client.post("/sdapi/v1/txt2img", json={**REQUEST, **scripts})
            edited = client.post("/sdapi/v1/img2img", json={**REQUEST, **scripts, "init_images": [png_b64(photo)], "denoising_strength": 0.6})
    finally:
        worker.close()
    assert listed == ["edges"]
    assert drawn.status_code == edited.status_code == 200, drawn.text + edited.text
    pipe = Pipeline.load(folder)
    options = dict(seed=5, steps=3, cfg=5.0, width=32, height=32, progress=False)
    controls = (ControlUnit(rings(), "raw", 0.7, 0.2, 0.8, "edges"),)
    plain = np.asarray(pipe.generate("a lake", **options).images[0]).astype(int)
    expected = (pipe.generate("a lake", controls=controls, **options), pipe.img2img("a lake", photo, 0.6, controls=controls, **options))
    for response, want in zip((drawn, edited), expected):
        image = np.asarray(open_b64(response.json()["images"][0]).convert("RGB")).astype(int)
        # Within one level: the worker thread may sum in another order (as tests/server's webuiapi test allows).
        assert np.abs(image - np.asarray(want.images[0]).astype(int)).max() <= 1
    assert np.abs(np.asarray(open_b64(drawn.json()["images"][0]).convert("RGB")).astype(int) - plain).max() > 1  # the unit steered it
