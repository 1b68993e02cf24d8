"""The server's pixel limit counts a picture's pixels, width x height, on every path of the
API that checks it (the sizes asked for, the model's own, each picture sent): exactly the
limit is served, one pixel more is a 400 naming the size. (A check on latent cells lets the
larger picture through, and fails here.)"""

from contextlib import ExitStack

import pytest
from control.tiny_controlnets import steering_controlnet
from PIL import Image
from server_helpers import make_client, png_b64

from ldm.control.library import ControlNets
from ldm.pipeline import Pipeline
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import Limits

SIZE = 32  # the tiny model's own size


@pytest.fixture
def serve(tiny_components, tiny_model_dir):
    """serve(max_pixels) -> a client of a server with that limit (and a ControlNet)."""
    pipeline = Pipeline(tiny_components, ControlNets.of(edges=("canny", steering_controlnet(tiny_components, 1))))
    entry = ModelEntry("tiny-model", tiny_model_dir)
    with ExitStack() as stack:

        def start(max_pixels):
            worker = Worker(pipeline, entry, [entry], Pipeline.load, Limits(max_pixels=max_pixels), max_queue=2)
            stack.callback(worker.close)
            return stack.enter_context(make_client(worker))

        yield start


def picture(size=SIZE):
    return png_b64(Image.new("RGB", (size, size), (90, 140, 200)))


def mask(size=SIZE):
    image = Image.new("L", (size, size), 0)
    image.paste(255, (0, size // 2, size, size))
    return png_b64(image)


BASE = {"prompt": "a lake", "steps": 1, "seed": 0}
# path -> (route, request): each checks one SIZE x SIZE picture; the others in it are smaller.
PATHS = {
    "txt2img, width and height given": ("txt2img", {**BASE, "width": SIZE, "height": SIZE}),
    "txt2img at the model's size": ("txt2img", BASE),
    "img2img: the init image": ("img2img", {**BASE, "init_images": [picture()]}),
    "inpaint: the mask": ("img2img", {**BASE, "init_images": [picture(16)], "mask": mask()}),
    "a ControlNet unit's image": ("txt2img", {**BASE, "width": 16, "height": 16, "alwayson_scripts": {"controlnet": {"args": [
        {"image": picture(), "module": "none", "model": "edges", "enabled": True}]}}}),
    "png-info: the picture": ("png-info", {"image": picture()}),
}  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_exactly_the_limit_is_served_one_pixel_more_is_refused(serve, path):
    route, request = PATHS[path]
    answer = serve(SIZE * SIZE).post(f"/sdapi/v1/{route}", json=request)
    assert answer.status_code == 200, answer.text
    answer = serve(SIZE * SIZE - 1).post(f"/sdapi/v1/{route}", json=request)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert f"{SIZE}x{SIZE}" in detail and "over the limit" in detail, detail
