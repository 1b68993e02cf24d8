"""LoRAs through the server: <lora:NAME:WEIGHT> prompt tags resolved in ldm-serve --lora-dir,
listed at /sdapi/v1/loras as AUTOMATIC1111 lists them, drawn as the Python API draws them."""

import numpy as np
from lora_files import random_lora, write_lora
from safetensors.torch import load_file, save_file
from server_helpers import make_client, open_b64

from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters

REQUEST = {"seed": 5, "steps": 2, "cfg_scale": 5.0, "sampler_name": "DDIM", "width": 32, "height": 32}


def lora_dir(tmp_path, tiny_components):
    folder = tmp_path / "loras"
    folder.mkdir()
    path = write_lora(random_lora(tiny_components), folder / "style.safetensors", "kohya")
    save_file(load_file(path), str(path), metadata={"ss_network_dim": "4", "ldm_training": '{"lora": {"rank": 4}}'})
    return folder


def test_prompt_tags_name_loras_in_the_lora_dir(worker, tiny_components, tmp_path):
    folder = lora_dir(tmp_path, tiny_components)
    with make_client(worker, lora_dir=str(folder)) as client:
        listed = client.get("/sdapi/v1/loras").json()
        assert listed == [{"name": "style", "alias": "style", "path": str(folder / "style.safetensors"),
                           "metadata": {"ss_network_dim": "4", "ldm_training": {"lora": {"rank": 4}}}}]  # fmt: skip
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:style:0.8>"})
        assert answer.status_code == 200, answer.text
        plain = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake"}).json()
    image = open_b64(answer.json()["images"][0])
    expected = Pipeline(tiny_components).generate(
        "a lake <lora:style:0.8>", lora_dir=str(folder), seed=5, steps=2, cfg=5.0, sampler="ddim", progress=False
    )
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.images[0]))
    assert not np.array_equal(np.asarray(image.convert("RGB")), np.asarray(open_b64(plain["images"][0]).convert("RGB")))
    assert "Lora hashes" in parse_parameters(image.text["parameters"])


def test_without_a_lora_dir_the_models_own_loras_are_named_and_listed(tiny_components, tmp_path):
    from ldm.formats.model_folder import save_model
    from ldm.server.worker import ModelEntry, Worker
    from ldm.settings import DEFAULT_LIMITS

    model = save_model(tiny_components, tmp_path / "model")
    lora_dir(model, tiny_components)  # model/loras/style.safetensors
    entry = ModelEntry("model", model)
    worker = Worker(Pipeline.load(model), entry, [entry], Pipeline.load, DEFAULT_LIMITS, max_queue=2)
    try:
        with make_client(worker) as client:
            assert [item["name"] for item in client.get("/sdapi/v1/loras").json()] == ["style"]
            answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:style:0.8>"})
    finally:
        worker.close()
    assert answer.status_code == 200, answer.text
    expected = Pipeline(tiny_components).generate(
        "a lake <lora:style:0.8>", lora_dir=str(model / "loras"), seed=5, steps=2, cfg=5.0, sampler="ddim", progress=False
    )
    np.testing.assert_array_equal(np.asarray(open_b64(answer.json()["images"][0]).convert("RGB")), np.asarray(expected.images[0]))


def test_without_a_lora_dir_a_tag_is_a_one_line_client_error(client):
    assert client.get("/sdapi/v1/loras").json() == []
    answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:style:1>"})
    assert 400 <= answer.status_code < 500
    assert "style" in answer.json()["detail"] and "\n" not in answer.json()["detail"]


def test_a_link_out_of_the_lora_dir_is_not_listed(worker, tiny_components, tmp_path):
    folder = lora_dir(tmp_path, tiny_components)
    outside = write_lora(random_lora(tiny_components, seed=1), tmp_path / "private.safetensors", "kohya")
    (folder / "escape.safetensors").symlink_to(outside)
    with make_client(worker, lora_dir=str(folder)) as client:
        assert [entry["name"] for entry in client.get("/sdapi/v1/loras").json()] == ["style"]


def test_a_missing_lora_is_named_without_the_servers_folder(worker, tiny_components, tmp_path):
    folder = lora_dir(tmp_path, tiny_components)
    with make_client(worker, lora_dir=str(folder)) as client:
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:stlye:0.8>"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert detail == "prompt: <lora:stlye>: this server has no LoRA named 'stlye'; GET /sdapi/v1/loras lists them"


def test_an_unreadable_lora_is_named_without_the_servers_folder(worker, tiny_components, tmp_path):
    folder = lora_dir(tmp_path, tiny_components)
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    with make_client(worker, lora_dir=str(folder)) as client:
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake <lora:broken:0.8>"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "broken.safetensors" in detail and str(tmp_path) not in detail and "\n" not in detail, detail
