"""Bad requests: a 4xx with a one-line message naming the problem, never a 500 or a traceback."""

import base64
import io

import pytest
from PIL import Image
from server_helpers import make_client, png_b64


def check_refused(answer, status, message):
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"], answer.json()
    assert "Traceback" not in answer.text and "\n" not in answer.json()["detail"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ('{"prompt": "x",', 422, "malformed JSON"),
        ("[1, 2]", 422, "valid dictionary"),
        ('{"steps": "many"}', 422, "steps: Input should be a valid integer"),
        ('{"sampler_name": "Euler z"}', 400, "unknown sampler_name 'Euler z'; known samplers: Euler a"),
        ('{"sampler_name": "Euler", "scheduler": "Karras"}', 400, "scheduler 'Karras' works only with sampler 'DPM++ 2M'"),
        ('{"scheduler": "Exponential"}', 400, "unknown scheduler 'Exponential'"),
        ('{"width": 4096, "height": 4096}', 400, "over the limit"),
        ('{"width": 30}', 400, "width must be a positive multiple of 8, got 30"),
        ('{"steps": 5000}', 400, "steps must be between 1 and 2000, got 5000"),
        ('{"batch_size": 4, "n_iter": 3}', 400, "n must be between 1 and 8, got 12"),
        ('{"batch_size": 0}', 400, "batch_size and n_iter must be at least 1"),
        ('{"seed": -2}', 400, "seed must be between 0 and 2**63-1"),
        ('{"cfg_scale": -1}', 422, "cfg_scale: Input should be greater than or equal to 0"),
        # Finite, so the settings' own check passes it, and then the images overflow into NaN.
        ('{"cfg_scale": 1e308}', 422, "cfg_scale: Input should be less than or equal to 100"),
        ('{"cfg_scale": NaN}', 422, "cfg_scale: Input should be a finite number"),
        ('{"prompt": "a lake <lora:style:1e308>"}', 400, "prompt: <lora:style:1e308>: the weight must be between -100 and 100, got 1e+308"),
    ],
)
def test_bad_txt2img_requests(client, body, status, message):
    check_refused(client.post("/sdapi/v1/txt2img", content=body, headers={"content-type": "application/json"}), status, message)


def huge_png_header() -> str:
    """A small PNG file that declares a 100000 x 100000 image."""
    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")  # compresses to a few kB
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"init_images": ["@@not base64@@"]}, "init_images[0] is not valid base64"),
        ({"init_images": [base64.b64encode(b"just some text").decode()]}, "init_images[0] is not an image"),
        ({"init_images": [base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()]}, "init_images[0] is"),
        ({"init_images": []}, "init_images must hold one image, got 0"),
        ({"init_images": [huge_png_header()]}, "init_images[0] is 10000x10000, over the limit"),
        ({"mask": "@@"}, "mask is not valid base64"),
        ({"denoising_strength": 1.5}, "strength must be between 0 and 1, got 1.5"),
        ({"mask_blur": -1}, "mask blur must be between 0"),
    ],
)
def test_bad_img2img_requests(client, photo, square_mask, change, message):
    request = {"prompt": "x", "init_images": [png_b64(photo)], "steps": 2, **change}
    if "mask_blur" in change:
        request["mask"] = png_b64(square_mask)
    check_refused(client.post("/sdapi/v1/img2img", json=request), 400, message)


def test_img2img_without_init_images(client):
    check_refused(client.post("/sdapi/v1/img2img", json={"prompt": "x"}), 422, "init_images: Field required")


def test_png_info_of_a_non_image(client):
    check_refused(client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"text").decode()}), 400, "image is not an image")


def test_unknown_model_in_options(client):
    check_refused(client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd-xl"}), 400, "unknown model 'sd-xl'; known models: tiny-model, other-model")


def test_request_body_over_the_upload_limit(worker):
    with make_client(worker, max_upload_bytes=1000) as client:
        check_refused(client.post("/sdapi/v1/txt2img", json={"prompt": "x" * 2000}), 413, "over the limit of 1000 bytes")

        def chunks():  # no Content-Length: counted while read
            for _ in range(10):
                yield b" " * 500

        check_refused(client.post("/sdapi/v1/txt2img", content=chunks(), headers={"content-type": "application/json"}), 413, "1000 bytes")
        assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}).status_code == 200


def test_api_key_is_required_everywhere_when_set(worker):
    with make_client(worker, api_key="s3cret") as client:
        for path in ("/", "/static/app.js", "/docs", "/openapi.json", "/sdapi/v1/options"):
            answer = client.get(path)
            check_refused(answer, 401, "API key")
            assert answer.headers["WWW-Authenticate"].startswith("Basic")
        check_refused(client.get("/sdapi/v1/options", headers={"Authorization": "Bearer wrong"}), 401, "API key")
        assert client.get("/sdapi/v1/options", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/", auth=("anyone", "s3cret")).status_code == 200
        check_refused(client.get("/", auth=("anyone", "wrong")), 401, "API key")


def test_an_unexpected_error_is_a_500_without_traceback(client, worker, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(worker.pipeline, "run", broken)
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1})
    assert answer.status_code == 500 and "secret internals" not in answer.text and "Traceback" not in answer.text
    monkeypatch.undo()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}).status_code == 200  # the worker lives on


def test_a_cli_flag_in_a_library_message_is_named_as_the_api_field(client, worker, monkeypatch):
    from ldm.settings import GenerationError

    def overflowing(*args, **kwargs):  # the pipeline's own words when the images come out NaN
        raise GenerationError("the images came out as NaN/infinite values (cfg 90, torch.float16): nothing was saved; "
                              "try a lower --cfg, or --dtype fp32")  # fmt: skip

    monkeypatch.setattr(worker.pipeline, "run", overflowing)
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "cfg_scale": 90})
    check_refused(answer, 400, "try a lower cfg_scale, or --dtype fp32")
