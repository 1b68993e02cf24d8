"""--embeddings-dir on ldm-generate and ldm-inpaint: names in the prompt use the folder's embeddings
(by default the model folder's embeddings/), the PNG names them; a bad folder or file is one line."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ldm.cli import generate, inpaint
from ldm.formats.model_folder import save_model
from ldm.lora.refs import file_hash
from ldm.png_info import parse_parameters

QUICK = ["--seed", "3", "--steps", "2", "--cfg", "5", "--sampler", "ddim", "--quiet"]


@pytest.fixture
def model(tiny_unet_components, tmp_path):
    return save_model(tiny_unet_components, tmp_path / "model")


def write_embedding(folder, name="style", width=32):
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(0))}, str(path))
    return path


def generated(tmp_path, name, *args, command=generate) -> Image.Image:
    out = tmp_path / name
    assert command.main([*map(str, args), *QUICK, "--out", str(out)]) == 0
    return Image.open(out)


def test_the_flag_and_the_model_folders_embeddings_draw_alike_and_the_png_names_them(model, tmp_path):
    path = write_embedding(tmp_path / "mine")
    flagged = generated(tmp_path, "flag.png", "a style lake", "--model", model, "--embeddings-dir", path.parent)
    write_embedding(model / "embeddings")
    default = generated(tmp_path, "default.png", "a style lake", "--model", model)
    assert np.array_equal(np.asarray(flagged), np.asarray(default))
    assert parse_parameters(flagged.text["parameters"])["TI hashes"] == f"style: {file_hash(path)}"
    (tmp_path / "empty").mkdir()
    plain = generated(tmp_path, "plain.png", "a style lake", "--model", model, "--embeddings-dir", tmp_path / "empty")
    assert not np.array_equal(np.asarray(flagged), np.asarray(plain))


def test_inpaint_takes_the_flag(model, tmp_path, photo, square_mask):
    path = write_embedding(tmp_path / "mine")
    photo.save(tmp_path / "in.png")
    square_mask.save(tmp_path / "mask.png")
    args = ["a style lake", "--model", model, "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png"]
    image = generated(tmp_path, "out.png", *args, "--embeddings-dir", path.parent, command=inpaint)
    assert parse_parameters(image.text["parameters"])["TI hashes"] == f"style: {file_hash(path)}"


def exit_status(*args) -> int:
    with pytest.raises(SystemExit) as stop:
        generate.main([*map(str, args), *QUICK])
    return stop.value.code


def test_a_missing_folder_and_a_file_too_wide_are_one_line_errors(model, tmp_path, capsys):
    assert exit_status("a lake", "--model", model, "--embeddings-dir", tmp_path / "nowhere") == 2
    assert "--embeddings-dir" in capsys.readouterr().err
    path = write_embedding(tmp_path / "mine", "wide", width=768)
    assert exit_status("a wide lake", "--model", model, "--embeddings-dir", path.parent, "--out", tmp_path / "x.png") == 2
    err = capsys.readouterr().err.strip()
    assert "wide.safetensors" in err and "768" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.png").exists()
