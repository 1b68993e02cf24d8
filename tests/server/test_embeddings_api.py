"""Textual-inversion embeddings through the server: listed at /sdapi/v1/embeddings in AUTOMATIC1111's
shape, used by name in prompts, recorded in the PNG and the info echo, errors without the server's folders."""

import json

import torch
from safetensors.torch import save_file
from server_helpers import make_client, open_b64

from ldm.lora.refs import file_hash
from ldm.pipeline import Pipeline

REQUEST = {"seed": 5, "steps": 2, "cfg_scale": 5.0, "sampler_name": "DDIM", "width": 32, "height": 32}


def embeddings_folder(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    rows = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"string_to_param": {"*": rows}, "name": "style", "step": 50, "sd_checkpoint": "abc", "sd_checkpoint_name": "tiny"},
               str(folder / "style.pt"))  # fmt: skip
    save_file({"emb_params": torch.zeros(1, 768)}, str(folder / "wide.safetensors"))
    (folder / "broken.pt").write_bytes(b"not a pickle")
    return folder


def test_embeddings_are_listed_used_and_recorded(worker, tmp_path):
    folder = embeddings_folder(tmp_path)
    worker.pipeline.embeddings_dir = str(folder)
    with make_client(worker) as client:
        listed = client.get("/sdapi/v1/embeddings").json()
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a lake, style"})
    assert listed == {
        "loaded": {"style": {"step": 50, "sd_checkpoint": "abc", "sd_checkpoint_name": "tiny", "shape": 32, "vectors": 2}},
        "skipped": {
            "broken": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": 0},
            "wide": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768, "vectors": 1},
        },
    }
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    hashes = f"style: {file_hash(folder / 'style.pt')}"
    assert info["extra_generation_params"] == {"TI hashes": hashes}
    assert f'TI hashes: "{hashes}"' in info["infotexts"][0]
    image = open_b64(answer.json()["images"][0])
    assert f'TI hashes: "{hashes}"' in image.info["parameters"]
    expected = Pipeline(worker.pipeline.components, embeddings_dir=str(folder)).generate(
        "a lake, style", seed=5, steps=2, cfg=5.0, sampler="ddim", progress=False
    )
    assert image.convert("RGB").tobytes() == expected.images[0].tobytes()


def test_naming_a_skipped_embedding_is_a_one_line_error_without_the_servers_folder(worker, tmp_path):
    folder = embeddings_folder(tmp_path)
    worker.pipeline.embeddings_dir = str(folder)
    with make_client(worker) as client:
        answer = client.post("/sdapi/v1/txt2img", json={**REQUEST, "prompt": "a wide lake"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "wide.safetensors" in detail and "768" in detail and str(tmp_path) not in detail and "\n" not in detail, detail


def test_without_an_embeddings_folder_the_list_is_empty(client):
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
