"""LoRA weights a web client can send: an absurd one is a 400 naming the prompt tag (no
command-line advice), checked before any work."""

from lora_files import random_lora, write_lora
from server_helpers import make_client

REQUEST = {"seed": 5, "steps": 2, "cfg_scale": 5.0, "sampler_name": "DDIM", "width": 32, "height": 32}


def test_an_absurd_lora_weight_is_a_400_naming_the_tag(worker, tiny_components, tmp_path):
    (tmp_path / "loras").mkdir()
    write_lora(random_lora(tiny_components), tmp_path / "loras" / "style.safetensors", "kohya")
    with make_client(worker, lora_dir=str(tmp_path / "loras")) as client:
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:style:1e308>"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert detail == "prompt: <lora:style:1e308>: the weight must be between -100 and 100, got 1e+308"
