"""The `webuiapi` package, the AUTOMATIC1111 client most scripts use, unchanged against a real
ldm-serve: what it asks before sending work, and a ControlNet unit on the img2img picture
(it sends "image": "" for that), drawn as the pipeline draws it."""

import os

import numpy as np
import pytest

from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline
from ldm.server.process import ServerProcess

webuiapi = pytest.importorskip("webuiapi") if not os.environ.get("CI") else __import__("webuiapi")


def test_the_webuiapi_client_unchanged(tiny_model_dir, tiny_components, photo):
    from ldm.control.model import controlnet_from_unet, save_controlnet

    save_controlnet(controlnet_from_unet(tiny_components.denoiser, 2), "canny", tiny_model_dir / "controlnet" / "edges")
    with ServerProcess("--model", tiny_model_dir, "--no-compile") as server:
        api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
        assert api.controlnet_version() == 2
        assert api.controlnet_model_list() == ["edges"]
        assert api.get_scripts() == {"txt2img": ["controlnet"], "img2img": ["controlnet"]}
        assert api.get_sd_vae() == []
        assert api.get_memory()["ram"]["used"] > 0
        flags = api.get_cmd_flags()
        assert flags["model"] == [str(tiny_model_dir)] and flags["port"] == 0 and flags["api_key"] is None
        unit = webuiapi.ControlNetUnit(module="canny", model="edges")  # no image: the img2img picture
        result = api.img2img(
            images=[photo], prompt="a boat", seed=3, steps=2, cfg_scale=5.0, sampler_name="DDIM",
            width=32, height=32, denoising_strength=0.6, controlnet_units=[unit],
        )  # fmt: skip
    expected = Pipeline.load(tiny_model_dir).img2img(
        "a boat", photo, seed=3, steps=2, cfg=5.0, sampler="ddim", width=32, height=32, strength=0.6, progress=False,
        controls=(ControlUnit(photo, "canny", model="edges"),),
    ).images[0]  # fmt: skip
    # The server's worker thread and this one may sum in another order with several CPU threads:
    # a pixel can round one level apart; any setting the client's request lost moves far more.
    difference = np.abs(np.asarray(result.image.convert("RGB"), dtype=int) - np.asarray(expected, dtype=int))
    assert difference.max() <= 1 and difference.mean() < 0.01
