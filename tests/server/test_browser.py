"""The page in a real browser (headless Chromium from the system, driven by Playwright) against a
real ldm-serve on a tiny model: generate, paint a mask and inpaint, read a PNG's parameters back,
the hires fix, start from the model's own sampling defaults; the API docs render offline. Every page loads
only from the server and logs no error (a missing favicon is one)."""

import base64
import contextlib
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ldm.server.process import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("no chromium on this machine (CI installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__("playwright.sync_api").sync_api

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def browsing(model_dir, path="/"):
    """A page of a real ldm-serve on `model_dir`; on leaving, checks that it logged no error and
    asked no other host for anything. The page records the JSON bodies it posted in `posted`."""
    with ServerProcess("--model", model_dir, "--no-compile") as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, elsewhere, page.posted = [], [], []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("request", lambda request: None if request.url.startswith((server.url, "data:", "blob:" + server.url)) else elsewhere.append(request.url))
        page.on("request", lambda request: page.posted.append(json.loads(request.post_data)) if request.method == "POST" else None)
        page.goto(server.url + path)
        yield page
        assert errors == [] and elsewhere == [], (errors, elsewhere)
        browser.close()


@pytest.fixture
def page(tiny_model_dir):
    with browsing(tiny_model_dir) as page:
        page.wait_for_function("document.querySelectorAll('#sampler_name option').length > 1")
        yield page


def image_of(figure) -> Image.Image:
    source = figure.locator("img").get_attribute("src")
    return Image.open(io.BytesIO(base64.b64decode(source.partition(",")[2])))


def fill_request(page, prompt: str, steps: int, seed: int) -> None:
    page.fill("#prompt", prompt)
    page.fill("#steps", str(steps))
    page.fill("#seed", str(seed))


def generate_first(page):
    """Clicks Generate; the first picture's figure and its image."""
    page.click("#generate")
    page.wait_for_selector("#gallery figure")
    figure = page.locator("#gallery figure").first
    return figure, image_of(figure)


def test_generate_inpaint_and_read_parameters_back(page, photo, tmp_path):
    fill_request(page, "a red circle", 3, 7)
    page.select_option("#sampler_name", "Euler a")
    first, generated = generate_first(page)
    assert generated.size == (32, 32)
    assert "Seed: 7" in first.locator("figcaption").inner_text() and "Sampler: euler-a" in first.locator("figcaption").inner_text()
    page.wait_for_selector("#generate:enabled")
    page.screenshot(path=tmp_path / "generated.png")

    # Inpainting: upload a picture, paint a stroke across its middle, generate.
    photo.save(tmp_path / "photo.png")
    page.set_input_files("#init-file", str(tmp_path / "photo.png"))
    page.wait_for_selector("#mask", state="visible")
    page.fill("#mask_blur", "0")
    page.fill("#brush", "6")
    page.locator("#brush").dispatch_event("input")
    box = page.locator("#mask").bounding_box()
    middle_y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, middle_y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, middle_y, steps=5)
    page.mouse.up()
    page.fill("#denoising_strength", "1")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery figure').length == 2")
    newest = page.locator("#gallery figure").first
    inpainted = np.asarray(image_of(newest).convert("RGB")).astype(int)
    original = np.asarray(photo.convert("RGB")).astype(int)
    assert "Mask blur: 0" in newest.locator("figcaption").inner_text()
    np.testing.assert_array_equal(inpainted[:4], original[:4])  # far from the stroke: kept
    assert np.abs(inpainted[14:18, 12:20] - original[14:18, 12:20]).mean() > 10  # under it: repainted
    page.wait_for_selector("#generate:enabled")
    page.screenshot(path=tmp_path / "inpainted.png")

    # Clear leaves no mask: the next request is img2img of the whole picture.
    page.click("#clear-mask")
    assert page.evaluate("maskDataUrl()") is None

    # A PNG read back fills the form with its parameters.
    generated.save(tmp_path / "generated-image.png", pnginfo=_parameters_of(generated))
    page.fill("#prompt", "something else")
    page.fill("#seed", "-1")
    page.set_input_files("#png-file", str(tmp_path / "generated-image.png"))
    page.wait_for_function("document.getElementById('prompt').value == 'a red circle'")
    assert page.input_value("#seed") == "7" and page.input_value("#steps") == "3"
    assert page.input_value("#sampler_name") == "Euler a"
    page.screenshot(path=tmp_path / "parameters-read.png")
    print("screenshots in", tmp_path)


def test_hires_fix_from_the_page_and_read_back(page, tmp_path):
    """The hires fix's controls send A1111's fields; its picture is twice the size; a PNG of it
    read back turns the fix on with its values."""
    fill_request(page, "a red circle", 2, 5)
    page.check("#enable_hr")
    page.select_option("#hr_upscaler", "Lanczos")
    page.fill("#hr_second_pass_steps", "1")
    page.fill("#hr_denoising_strength", "0.4")
    figure, generated = generate_first(page)
    caption = figure.locator("figcaption").inner_text()
    assert generated.size == (64, 64)
    assert "Size: 32x32" in caption and "Denoising strength: 0.4, Hires upscale: 2, Hires steps: 1, Hires upscaler: Lanczos" in caption, caption
    sent = [body for body in page.posted if body.get("prompt") == "a red circle"][0]
    assert (sent["enable_hr"], sent["hr_scale"], sent["hr_upscaler"], sent["denoising_strength"]) == (True, 2, "Lanczos", 0.4)
    page.wait_for_selector("#generate:enabled")

    page.uncheck("#enable_hr")
    page.fill("#hr_denoising_strength", "0.7")
    generated.save(tmp_path / "hires.png", pnginfo=_parameters_of(generated))
    page.set_input_files("#png-file", str(tmp_path / "hires.png"))
    page.wait_for_function("document.getElementById('enable_hr').checked")
    assert page.input_value("#hr_denoising_strength") == "0.4" and page.input_value("#hr_upscaler") == "Lanczos"
    assert page.input_value("#hr_second_pass_steps") == "1" and page.input_value("#hr_scale") == "2"


def _parameters_of(image):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", image.text["parameters"])
    return info


def test_the_page_starts_from_the_models_own_sampling_defaults(tmp_path, tiny_components):
    """An LCM model's 4 steps at cfg 1 apply from the page: untouched fields are not sent."""
    from ldm.formats.model_folder import save_model

    sampling = dataclasses.replace(tiny_components.config.sampling, sampler="lcm", steps=4, cfg=1.0)
    model = save_model(dataclasses.replace(tiny_components, config=dataclasses.replace(tiny_components.config, sampling=sampling)), tmp_path / "lcm-model")
    with browsing(model) as page:
        page.wait_for_function("document.getElementById('steps').placeholder == '4'")
        assert page.locator("#sampler_name option").first.inner_text() == "model's (LCM)"
        assert page.get_attribute("#cfg_scale", "placeholder") == "1" and page.get_attribute("#width", "placeholder") == "32"
        page.fill("#prompt", "a red circle")
        page.click("#generate")
        page.wait_for_selector("#gallery figure")
        caption = page.locator("#gallery figure figcaption").first.inner_text()
        page.wait_for_selector("#generate:enabled")
    assert "Steps: 4" in caption and "Sampler: lcm" in caption and "CFG scale: 1," in caption, caption
    sent = [body for body in page.posted if body.get("prompt") == "a red circle"]
    assert len(sent) == 1 and not {"sampler_name", "steps", "cfg_scale", "width", "height"} & set(sent[0]), sent


def test_the_api_docs_render_offline(tiny_model_dir):
    with browsing(tiny_model_dir, "/docs") as page:
        page.wait_for_selector(".opblock", timeout=30000)
        assert "/sdapi/v1/txt2img" in page.content()
