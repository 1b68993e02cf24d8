"""A1111's prompt syntax through the HTTP API: on by default, `prompt_syntax` per request,
ldm-serve --prompt-syntax for requests that do not say; the PNG keeps the prompt as written."""

import numpy as np
from server_helpers import make_client, open_b64

from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters

PROMPT = "a (lake:1.4) [at dawn:at dusk:2]"
REQUEST = {"prompt": PROMPT, "negative_prompt": "[fog]", "seed": 3, "steps": 3, "width": 32, "height": 32}


def drawn(client, **extra):
    answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, **extra})
    assert answer.status_code == 200, answer.text
    return open_b64(answer.json()["images"][0])


def expected(components, syntax):
    options = dict(negative="[fog]", seed=3, steps=3, width=32, height=32, progress=False, prompt_syntax=syntax)
    return np.asarray(Pipeline(components).generate(PROMPT, **options).images[0])


def test_requests_read_a1111_syntax_unless_they_or_the_server_say_plain(worker, tiny_components):
    a1111, plain = expected(tiny_components, "a1111"), expected(tiny_components, "plain")
    assert not np.array_equal(a1111, plain)
    with make_client(worker) as client:
        image = drawn(client)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), a1111)
        parameters = parse_parameters(image.text["parameters"])
        assert parameters["prompt"] == PROMPT and parameters["negative_prompt"] == "[fog]"
        assert "Prompt syntax" not in parameters  # A1111's reading: nothing to say
        image = drawn(client, prompt_syntax="plain")
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), plain)
        assert parse_parameters(image.text["parameters"])["Prompt syntax"] == "plain"
        bad = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt_syntax": "compel"})
        assert bad.status_code in (400, 422) and "one of a1111, plain" in bad.text
    with make_client(worker, prompt_syntax="plain") as client:
        np.testing.assert_array_equal(np.asarray(drawn(client).convert("RGB")), plain)
        np.testing.assert_array_equal(np.asarray(drawn(client, prompt_syntax="a1111").convert("RGB")), a1111)
