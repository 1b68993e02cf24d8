"""The /sdapi/v1 routes as an AUTOMATIC1111 client uses them, checked against Pipeline run in-process."""

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from server_helpers import make_client, open_b64, png_b64

from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters


def pixels(image):
    return np.asarray(image.convert("RGB"))


def test_txt2img_matches_the_pipeline_and_carries_a1111_parameters(client, tiny_components):
    request = {
        "prompt": "a lake, at dawn",
        "negative_prompt": "fog",
        "seed": 11,
        "steps": 3,
        "cfg_scale": 6.5,
        "sampler_name": "Euler a",
        "width": 32,
        "height": 32,
        "restore_faces": False,  # A1111 fields we do not use are accepted
    }
    answer = client.post("/sdapi/v1/txt2img", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"images", "parameters", "info"}
    assert body["parameters"]["prompt"] == "a lake, at dawn" and body["parameters"]["restore_faces"] is False
    image = open_b64(body["images"][0])
    expected = Pipeline(tiny_components).generate(
        "a lake, at dawn", negative="fog", seed=11, steps=3, cfg=6.5, sampler="euler-a", progress=False
    )
    np.testing.assert_array_equal(pixels(image), pixels(expected.images[0]))
    parameters = parse_parameters(image.text["parameters"])
    assert parameters["prompt"] == "a lake, at dawn" and parameters["negative_prompt"] == "fog"
    assert (parameters["Seed"], parameters["Steps"], parameters["CFG scale"], parameters["Sampler"]) == ("11", "3", "6.5", "euler-a")
    info = json.loads(body["info"])
    assert info["all_seeds"] == [11] and info["sampler_name"] == "Euler a" and info["sd_model_name"] == "tiny-model"
    assert info["infotexts"] == [image.text["parameters"]] and info["interrupted"] is False


def test_batch_and_n_iter_give_consecutive_seeds_as_one_run(client, tiny_components):
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 5, "steps": 2, "batch_size": 2, "n_iter": 2}).json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 4 and info["all_seeds"] == [5, 6, 7, 8]
    assert (info["batch_size"], info["n_iter"]) == (2, 2)
    lone = Pipeline(tiny_components).generate("a cat", seed=7, steps=2, progress=False).images[0]
    np.testing.assert_array_equal(pixels(open_b64(body["images"][2])), pixels(lone))


def test_seed_minus_one_is_random_and_reported(client):
    seeds = []
    for _ in range(2):
        info = json.loads(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": -1, "steps": 1}).json()["info"])
        assert info["seed"] == info["all_seeds"][0] >= 0
        seeds.append(info["seed"])
    assert seeds[0] != seeds[1]


@pytest.mark.parametrize(
    "sampler_name, scheduler, ours",
    [("DPM++ 2M", "Karras", "dpm++2m-karras"), ("DPM++ 2M Karras", None, "dpm++2m-karras"), ("k_euler", "Automatic", "euler"), ("unipc", None, "unipc")],
)
def test_sampler_names_of_a1111_map_to_ours(client, sampler_name, scheduler, ours):
    request = {"prompt": "x", "seed": 1, "steps": 2, "sampler_name": sampler_name, "scheduler": scheduler}
    image = open_b64(client.post("/sdapi/v1/txt2img", json=request).json()["images"][0])
    assert parse_parameters(image.text["parameters"])["Sampler"] == ours


def test_img2img_matches_the_pipeline(client, tiny_components, photo):
    request = {"init_images": [png_b64(photo)], "prompt": "a boat", "seed": 3, "steps": 4, "denoising_strength": 0.5}
    body = client.post("/sdapi/v1/img2img", json=request).json()
    expected = Pipeline(tiny_components).img2img("a boat", photo, strength=0.5, seed=3, steps=4, progress=False)
    image = open_b64(body["images"][0])
    np.testing.assert_array_equal(pixels(image), pixels(expected.images[0]))
    assert parse_parameters(image.text["parameters"])["Denoising strength"] == "0.5"
    assert body["parameters"]["init_images"] is None  # not echoed back, as A1111 without include_init_images


def test_img2img_without_strength_uses_a1111s_default(client, photo):
    body = client.post("/sdapi/v1/img2img", json={"init_images": [png_b64(photo)], "prompt": "x", "steps": 4}).json()
    assert json.loads(body["info"])["denoising_strength"] == 0.75


def test_inpaint_with_a_data_url_mask_matches_the_pipeline(client, tiny_components, photo, square_mask):
    request = {
        "init_images": ["data:image/png;base64," + png_b64(photo)],
        "mask": png_b64(square_mask),
        "prompt": "a hole",
        "seed": 2,
        "steps": 3,
        "denoising_strength": 1.0,
        "mask_blur": 0,
    }
    body = client.post("/sdapi/v1/img2img", json=request).json()
    image = open_b64(body["images"][0])
    expected = Pipeline(tiny_components).inpaint("a hole", photo, square_mask, strength=1.0, seed=2, steps=3, mask_blur=0, progress=False)
    np.testing.assert_array_equal(pixels(image), pixels(expected.images[0]))
    outside = np.asarray(square_mask) == 0
    np.testing.assert_array_equal(pixels(image)[outside], pixels(photo)[outside])  # only the mask is repainted
    assert json.loads(body["info"])["is_using_inpainting_conditioning"] is True


def test_inverted_mask_and_only_masked_area(client, tiny_components, photo, square_mask):
    inverted = square_mask.point(lambda v: 255 - v)
    request = {
        "init_images": [png_b64(photo)],
        "mask": png_b64(inverted),
        "inpainting_mask_invert": 1,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 4,
        "prompt": "x",
        "seed": 2,
        "steps": 2,
        "mask_blur": 0,
    }
    image = open_b64(client.post("/sdapi/v1/img2img", json=request).json()["images"][0])
    expected = Pipeline(tiny_components).inpaint(
        "x", photo, square_mask, strength=0.75, seed=2, steps=2, mask_blur=0, crop_to_mask=4, progress=False
    )
    np.testing.assert_array_equal(pixels(image), pixels(expected.images[0]))
    assert parse_parameters(image.text["parameters"])["Masked area padding"] == "4"


def test_alpha_mask_is_read_as_a1111_reads_it(client, photo, square_mask):
    """An RGBA mask with transparency: opaque is repainted, whatever its colour."""
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.putalpha(square_mask)
    common = {"init_images": [png_b64(photo)], "prompt": "x", "seed": 2, "steps": 2, "mask_blur": 0}
    from_alpha = client.post("/sdapi/v1/img2img", json={**common, "mask": png_b64(rgba)}).json()["images"][0]
    from_grey = client.post("/sdapi/v1/img2img", json={**common, "mask": png_b64(square_mask)}).json()["images"][0]
    np.testing.assert_array_equal(pixels(open_b64(from_alpha)), pixels(open_b64(from_grey)))


def test_lists_samplers_schedulers_models_and_options(client):
    names = [each["name"] for each in client.get("/sdapi/v1/samplers").json()]
    assert {"Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC"} <= set(names)
    assert [each["label"] for each in client.get("/sdapi/v1/schedulers").json()] == ["Automatic", "Karras"]
    assert [each["title"] for each in client.get("/sdapi/v1/sd-models").json()] == ["tiny-model", "other-model"]
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-model"


def test_options_switch_the_model(client):
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other-model", "CLIP_stop_at_last_layers": 1}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "other-model"
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}).json()
    assert parse_parameters(open_b64(body["images"][0]).text["parameters"])["Model"] == "other"
    assert json.loads(body["info"])["sd_model_name"] == "other-model"


def test_png_info_reads_back_what_txt2img_wrote(client):
    image = client.post("/sdapi/v1/txt2img", json={"prompt": "a red, round boat", "negative_prompt": "rain", "seed": 9, "steps": 2}).json()["images"][0]
    body = client.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert body["info"].startswith("a red, round boat\nNegative prompt: rain\n")
    assert body["parameters"]["Prompt"] == "a red, round boat" and body["parameters"]["Negative prompt"] == "rain"
    assert body["parameters"]["Seed"] == "9" and body["parameters"]["Steps"] == "2"


def test_png_info_of_a_plain_png_is_empty(client, photo):
    assert client.post("/sdapi/v1/png-info", json={"image": png_b64(photo)}).json() == {"info": "", "items": {}, "parameters": {}}


def test_the_page_its_assets_and_the_openapi_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/sdapi/v1/txt2img" in client.get("/openapi.json").json()["paths"]
    assert "seed" in client.get("/openapi.json").json()["components"]["schemas"]["Txt2ImgRequest"]["properties"]


def test_the_api_docs_work_offline(client):
    """The page loads nothing from another host (offline, a CDN is a blank page): every script,
    style sheet and icon it names is served here."""
    html = client.get("/docs").text
    assert not re.search(r"""["'](https?:)?//""", html), "the docs page names another host"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert client.get("/openapi.json").status_code == 200


def test_the_favicon_is_served(client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(answer.content)).size == (32, 32)
    assert '<link rel="icon" href="/favicon.ico">' in client.get("/").text


def test_what_a1111_clients_ask_before_sending_work(client):
    assert client.get("/controlnet/version").json() == {"version": 2}
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}  # no ControlNets: no script
    assert client.get("/sdapi/v1/sd-vae").json() == []  # the VAE is part of each model folder
    memory = client.get("/sdapi/v1/memory").json()
    assert 0 < memory["ram"]["used"] <= memory["ram"]["total"] and 0 <= memory["ram"]["free"] <= memory["ram"]["total"]
    assert memory["cuda"] == {"error": "unavailable" if not torch.cuda.is_available() else "the model is on cpu"}


def test_cmd_flags_are_the_servers_own_without_the_key(worker):
    flags = {"model": ["runs/x/model"], "port": 7860, "api_key": "s3cret", "max_pixels": None}
    with make_client(worker, api_key="s3cret", command_flags=flags) as client:
        shown = client.get("/sdapi/v1/cmd-flags", headers={"Authorization": "Bearer s3cret"})
    assert shown.json() == {"model": ["runs/x/model"], "port": 7860, "api_key": "(set, not shown)", "max_pixels": None}
    assert "s3cret" not in shown.text


def test_model_defaults_are_the_models_own_sampling_settings(worker, tiny_components):
    """What the page starts from: a request without sampler, steps and cfg gets these."""
    import dataclasses

    sampling = dataclasses.replace(tiny_components.config.sampling, sampler="lcm", steps=4, cfg=1.0)
    config = dataclasses.replace(tiny_components.config, sampling=sampling)
    worker.pipeline.components = dataclasses.replace(tiny_components, config=config)
    with make_client(worker) as client:
        defaults = client.get("/ldm/v1/model-defaults").json()
        info = json.loads(client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1}).json()["info"])
    assert defaults == {"sd_model_checkpoint": "tiny-model", "sampler_name": "LCM", "steps": 4, "cfg_scale": 1.0, "width": 32, "height": 32}
    assert (info["sampler_name"], info["steps"], info["cfg_scale"]) == ("LCM", 4, 1.0)
