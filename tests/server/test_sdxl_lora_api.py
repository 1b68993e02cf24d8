"""An SDXL LoRA named by a <lora:NAME:WEIGHT> tag in an A1111 API request draws what the
Python API draws with the file at that weight."""

import numpy as np
from sdxl_folder import write_tiny_sdxl_folder
from sdxl_lora_files import sdxl_lora_for_folder
from server_helpers import make_client, open_b64

from ldm.pipeline import Pipeline
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import DEFAULT_LIMITS

REQUEST = {"seed": 5, "steps": 2, "cfg_scale": 5.0, "sampler_name": "DDIM", "width": 32, "height": 32}


def test_a_prompt_tag_draws_an_sdxl_lora(tmp_path):
    folder = write_tiny_sdxl_folder(tmp_path)
    (tmp_path / "loras").mkdir()
    path = sdxl_lora_for_folder(folder, tmp_path / "loras" / "style.safetensors", "kohya")
    entry = ModelEntry("sdxl", folder)
    worker = Worker(Pipeline.load(folder), entry, [entry], Pipeline.load, DEFAULT_LIMITS, max_queue=2)
    try:
        with make_client(worker, lora_dir=str(path.parent)) as client:
            tagged = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:style:0.5>"})
            plain = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake"})
    finally:
        worker.close()
    assert tagged.status_code == plain.status_code == 200, tagged.text
    expected = Pipeline.load(folder).generate(
        "a lake", loras=((str(path), 0.5),), seed=5, steps=2, cfg=5.0, sampler="ddim", width=32, height=32, progress=False
    )
    image = np.asarray(open_b64(tagged.json()["images"][0]).convert("RGB"))
    # Within one level: the worker thread may sum in another order (as tests/server's webuiapi test allows).
    assert np.abs(image.astype(int) - np.asarray(expected.images[0]).astype(int)).max() <= 1
    assert not np.array_equal(image, np.asarray(open_b64(plain.json()["images"][0]).convert("RGB")))
