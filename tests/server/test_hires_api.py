"""AUTOMATIC1111's hires fix fields on /sdapi/v1/txt2img: honoured with enable_hr (the same
picture as the pipeline's hires fix, the infotext and info as A1111 writes them), ignored
without it, as A1111 does."""

import json

import numpy as np
import pytest
from server_helpers import open_b64
from tiny import build_tiny_upscaler

from ldm.formats.model_folder import save_model
from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters

HIRES = {"hr_scale": 2, "hr_second_pass_steps": 2, "denoising_strength": 0.5, "hr_upscaler": "Latent (bicubic)"}


def post(client, **fields):
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a lake", "seed": 4, "steps": 3, **fields})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return open_b64(body["images"][0]), json.loads(body["info"])


def test_enable_hr_draws_the_hires_fix_of_the_pipeline(client, tiny_components):
    image, info = post(client, enable_hr=True, **HIRES)
    expected = Pipeline(tiny_components).generate(
        "a lake", seed=4, steps=3, hires_scale=2, hires_steps=2, hires_strength=0.5, hires_upscaler="Latent (bicubic)", progress=False
    )
    assert image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected.images[0]))
    assert "Size: 32x32, Model: tiny, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent (bicubic)" in info["infotexts"][0]
    assert (info["width"], info["height"], info["denoising_strength"]) == (32, 32, 0.5)  # A1111: the first pass's size
    assert info["extra_generation_params"] == {"Hires upscale": "2", "Hires steps": "2", "Hires upscaler": "Latent (bicubic)"}


def test_without_enable_hr_the_hires_fields_are_ignored(client, tiny_components):
    image, info = post(client, enable_hr=False, **HIRES, hr_resize_x=64, hr_resize_y=64)
    plain = Pipeline(tiny_components).generate("a lake", seed=4, steps=3, progress=False)
    assert image.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(plain.images[0]))
    assert "Hires" not in info["infotexts"][0] and "Denoising strength" not in info["infotexts"][0]
    assert info["denoising_strength"] is None and info["extra_generation_params"] == {}


def test_enable_hr_alone_takes_a1111s_defaults(client):
    image, info = post(client, enable_hr=True, hr_second_pass_steps=1)
    parameters = parse_parameters(image.text["parameters"])
    assert image.size == (64, 64)
    assert (parameters["Hires upscale"], parameters["Denoising strength"], parameters["Hires upscaler"]) == ("2", "0.75", "Latent")


def test_a_resize_wins_over_the_scale_and_is_recorded(client):
    image, info = post(client, enable_hr=True, hr_scale=1.5, hr_resize_x=64, hr_resize_y=40, hr_second_pass_steps=1)
    assert image.size == (64, 40)
    assert "Hires resize: 64x40" in info["infotexts"][0] and "Hires upscale:" not in info["infotexts"][0]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hr_scale": 4}, "hires fix size 128x128 is 0.0 megapixels, over the limit"),
        ({"hr_scale": 2, "width": 64, "height": 64}, "hires fix size 128x128 is 0.0 megapixels, over the limit"),
        ({"hr_upscaler": "R-ESRGAN 4x+"}, "unknown hires upscaler 'R-ESRGAN 4x+'; choose one of latent,"),
        ({"denoising_strength": 1.5}, "hires strength must be between 0 and 1, got 1.5"),
    ],
)
def test_bad_hires_requests_are_400_one_line(client, fields, message):
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "enable_hr": True, **fields})
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["detail"] and "\n" not in answer.json()["detail"], answer.json()


def test_the_upscaler_lists_name_what_hr_upscaler_takes(client):
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()] == ["Lanczos", "Nearest", "None"]
    assert [m["name"] for m in client.get("/sdapi/v1/latent-upscale-modes").json()][:3] == ["Latent", "Latent (antialiased)", "Latent (bicubic)"]


def test_hr_upscaler_takes_an_upscaler_models_folder(client, tiny_components, tmp_path):
    folder = str(save_model(build_tiny_upscaler(), tmp_path / "up"))
    fields = {**HIRES, "hr_upscaler": folder}
    image, info = post(client, enable_hr=True, **fields)
    expected = Pipeline(tiny_components).generate(
        "a lake", seed=4, steps=3, hires_scale=2, hires_steps=2, hires_strength=0.5, hires_upscaler=folder, progress=False
    )
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected.images[0]))
    assert info["extra_generation_params"]["Hires upscaler"] == folder
