"""ControlNet units in the `alwayson_scripts` layout of AUTOMATIC1111's ControlNet extension,
checked against Pipeline.generate / img2img with the same ControlUnits."""

import numpy as np
import pytest
from control.tiny_controlnets import steering_controlnet
from PIL import Image, ImageDraw
from server_helpers import make_client, open_b64, png_b64

from ldm.control.library import ControlNets
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters
from ldm.server.worker import ModelEntry, Worker
from ldm.settings import Limits


@pytest.fixture
def edges():
    image = Image.new("RGB", (32, 32))
    draw = ImageDraw.Draw(image)
    draw.line([(2, 4), (29, 20)], fill="white", width=2)
    draw.rectangle([8, 18, 20, 28], outline="white")
    return image


@pytest.fixture
def control_pipeline(tiny_components):
    nets = ControlNets.of(edges=("canny", steering_controlnet(tiny_components, 1)), scene=("layout", steering_controlnet(tiny_components, 2)))
    return Pipeline(tiny_components, nets)


@pytest.fixture
def control_client(control_pipeline, tiny_model_dir):
    entry = ModelEntry("tiny-model", tiny_model_dir)
    worker = Worker(control_pipeline, entry, [entry], Pipeline.load, Limits(max_pixels=64 * 64), max_queue=2)
    with make_client(worker) as client:
        yield client
    worker.close()


def pixels(image):
    return np.asarray(image.convert("RGB"))


def with_units(request, *units):
    return {**request, "alwayson_scripts": {"controlnet": {"args": list(units)}}}


TXT2IMG = {"prompt": "a lake", "seed": 4, "steps": 3, "cfg_scale": 5, "sampler_name": "DDIM"}


@pytest.mark.parametrize("module, ours", [("canny", "canny"), ("none", "raw"), ("layout", "layout")])
def test_a_unit_matches_the_pipeline_with_the_same_control_unit(control_client, control_pipeline, edges, module, ours):
    unit = {"image": png_b64(edges), "module": module, "model": "edges [0123abcd]", "weight": 0.7,
            "guidance_start": 0.2, "guidance_end": 0.8, "enabled": True}  # fmt: skip
    answer = control_client.post("/sdapi/v1/txt2img", json=with_units(TXT2IMG, unit))
    assert answer.status_code == 200, answer.text
    image = open_b64(answer.json()["images"][0])
    expected = control_pipeline.generate(
        "a lake", seed=4, steps=3, cfg=5, sampler="ddim", progress=False, controls=(ControlUnit(edges, ours, 0.7, 0.2, 0.8, "edges"),)
    ).images[0]
    np.testing.assert_array_equal(pixels(image), pixels(expected))
    plain = control_pipeline.generate("a lake", seed=4, steps=3, cfg=5, sampler="ddim", progress=False).images[0]
    assert np.abs(pixels(image).astype(int) - pixels(plain)).max() > 0  # the unit steered it
    recorded = parse_parameters(image.text["parameters"])["ControlNet 0"]
    assert recorded.startswith(f"Module: {'none' if ours == 'raw' else ours}, Model: edges, Weight: 0.7")


def test_two_units_a_disabled_one_and_a_model_from_another_install(control_client, control_pipeline, edges, photo):
    units = [
        {"image": png_b64(edges), "module": "none", "model": "control_v11p_sd15_canny [d14c016b]"},
        {"image": png_b64(photo), "module": "canny", "enabled": False},
        {"image": "data:image/png;base64," + png_b64(photo), "module": "raw", "model": "scene", "weight": 1.3},
    ]
    body = control_client.post("/sdapi/v1/txt2img", json=with_units(TXT2IMG, *units)).json()
    expected = control_pipeline.generate(
        "a lake", seed=4, steps=3, cfg=5, sampler="ddim", progress=False,
        controls=(ControlUnit(edges, "raw", model="edges"), ControlUnit(photo, "raw", 1.3, model="scene")),
    ).images[0]  # fmt: skip
    np.testing.assert_array_equal(pixels(open_b64(body["images"][0])), pixels(expected))


def test_img2img_unit_without_an_image_reads_the_init_image(control_client, control_pipeline, photo):
    request = {"init_images": [png_b64(photo)], "prompt": "a boat", "seed": 3, "steps": 4, "denoising_strength": 0.6}
    unit = {"module": "canny", "model": "None"}
    body = control_client.post("/sdapi/v1/img2img", json=with_units(request, unit)).json()
    expected = control_pipeline.img2img(
        "a boat", photo, strength=0.6, seed=3, steps=4, progress=False, controls=(ControlUnit(photo, "canny"),)
    ).images[0]
    np.testing.assert_array_equal(pixels(open_b64(body["images"][0])), pixels(expected))


# A unit exactly as the webuiapi client's ControlNetUnit(module="canny").to_dict() sends it when it
# has no picture of its own: "image": "" means "the img2img picture".
WEBUIAPI_UNIT = {
    "image": "", "mask": None, "module": "canny", "model": "None", "weight": 1.0, "resize_mode": "Resize and Fill",
    "low_vram": False, "processor_res": 512, "threshold_a": 64, "threshold_b": 64, "guidance_start": 0.0,
    "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False, "hr_option": "Both", "enabled": True,
}  # fmt: skip


@pytest.mark.parametrize("image", ["", {"image": "", "mask": None}])
def test_img2img_unit_with_an_empty_image_reads_the_init_image(control_client, control_pipeline, photo, image):
    request = {"init_images": [png_b64(photo)], "prompt": "a boat", "seed": 3, "steps": 4, "denoising_strength": 0.6}
    unit = {**WEBUIAPI_UNIT, "image": image}
    answer = control_client.post("/sdapi/v1/img2img", json={**request, "alwayson_scripts": {"ControlNet": {"args": [unit]}}})
    assert answer.status_code == 200, answer.text
    expected = control_pipeline.img2img(
        "a boat", photo, strength=0.6, seed=3, steps=4, progress=False, controls=(ControlUnit(photo, "canny"),)
    ).images[0]
    np.testing.assert_array_equal(pixels(open_b64(answer.json()["images"][0])), pixels(expected))


def test_txt2img_unit_with_an_empty_image_is_4xx_saying_why(control_client):
    answer = control_client.post("/sdapi/v1/txt2img", json=with_units(TXT2IMG, WEBUIAPI_UNIT))
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == (
        "controlnet unit 0: no image: give one in 'image' (only img2img can leave it empty, for its input picture)"
    )


@pytest.mark.parametrize(
    "unit, message",
    [
        ({"module": "depth_midas"}, "controlnet unit 0: unknown module 'depth_midas'"),
        ({"image": "not base64!"}, "controlnet unit 0 image is not valid base64"),
        ({"weight": -0.5}, "control scale must be a finite number >= 0"),
        ({"weight": "strong"}, "controlnet unit 0: weight must be a number"),
        ({"guidance_start": 0.9, "guidance_end": 0.1}, "is after its end"),
        ({"model": "control_v11p_sd15_openpose [cab727d4]"}, "no ControlNet named 'control_v11p_sd15_openpose'"),
        ({"image": None}, "controlnet unit 0: no image"),
    ],
)
def test_bad_units_are_4xx_with_one_line(control_client, edges, unit, message):
    answer = control_client.post("/sdapi/v1/txt2img", json=with_units(TXT2IMG, {"image": png_b64(edges), **unit}))
    assert 400 <= answer.status_code < 500, answer.text
    detail = answer.json()["detail"]
    assert message in detail and "\n" not in detail


def test_args_not_a_list_is_4xx(control_client):
    answer = control_client.post("/sdapi/v1/txt2img", json={**TXT2IMG, "alwayson_scripts": {"controlnet": {"args": "x"}}})
    assert answer.status_code == 400 and "args must be a list" in answer.json()["detail"]


def test_model_and_module_lists(control_client):
    assert control_client.get("/controlnet/model_list").json() == {"model_list": ["edges", "scene"]}
    modules = control_client.get("/controlnet/module_list").json()["module_list"]
    assert {"none", "canny", "layout"} <= set(modules)
    assert control_client.get("/sdapi/v1/scripts").json() == {"txt2img": ["controlnet"], "img2img": ["controlnet"]}
