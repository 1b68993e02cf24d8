"""ldm-convert's destination: never inside, over or around what it reads (the source model,
the folder it shares parts with, the LoRAs it merges); an existing DST only with --overwrite;
built-in model names as SRC, as every other command takes them."""

import hashlib

import pytest
import torch
from lora_files import random_lora, write_lora

from ldm.builtin_models import BUILTIN_MODELS, is_installed
from ldm.cli import convert
from ldm.formats.model_folder import CONFIG_FILE, load_model, save_model


@pytest.fixture
def model(tiny_unet_components, tmp_path):
    return save_model(tiny_unet_components, tmp_path / "model")


@pytest.fixture
def sd_folder(tiny_unet_components, tmp_path):
    from sd_folder import write_tiny_sd_folder

    return write_tiny_sd_folder(tiny_unet_components, tmp_path)


def snapshot(folder) -> dict[str, str]:
    """Every path under `folder` (hidden ones too) and its content's hash."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def refused(capsys, *args) -> str:
    """The one line ldm-convert ends with when it refuses (exit 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        convert.main([*map(str, args)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1 and lines[0].startswith("ldm-convert: error: "), lines
    return lines[0]


def same_denoiser(a, b) -> bool:
    first, second = load_model(a).denoiser.state_dict(), load_model(b).denoiser.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ----------------------------------------------------------------------------- DST inside SRC, SRC inside DST


@pytest.mark.parametrize("inside", ["denoiser.safetensors", "unet.safetensors", "sub/out.safetensors", "out", "model.yaml"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_destination_inside_the_source_is_refused_and_the_source_kept(model, capsys, inside, overwrite):
    before = snapshot(model)
    assert "inside SRC" in refused(capsys, model, model / inside, *overwrite)
    assert snapshot(model) == before


def test_a_destination_inside_the_source_through_a_symlink_is_refused(model, tmp_path, capsys):
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    before = snapshot(model)
    assert "inside SRC" in refused(capsys, model, tmp_path / "link" / "denoiser.safetensors", "--overwrite")
    (model / "elsewhere.safetensors").symlink_to(tmp_path / "x.safetensors")  # the link itself lives in SRC
    before = snapshot(model)
    assert "inside SRC" in refused(capsys, model, model / "elsewhere.safetensors")
    assert snapshot(model) == before and not (tmp_path / "x.safetensors").exists()


def test_a_symlink_loop_is_one_line(model, tmp_path, capsys):
    (tmp_path / "loop.safetensors").symlink_to(tmp_path / "loop.safetensors")
    for target in ("loop.safetensors", "loop.safetensors/out.safetensors"):
        assert "symlink" in refused(capsys, model, tmp_path / target, "--overwrite")
    assert (tmp_path / "loop.safetensors").is_symlink()


def test_a_diffusers_source_is_not_copied_into_itself(sd_folder, capsys):
    before = snapshot(sd_folder)
    assert "inside SRC" in refused(capsys, sd_folder, sd_folder / "out")
    assert snapshot(sd_folder) == before


def test_a_source_inside_the_destination_is_refused(model, sd_folder, capsys):
    """Replacing the diffusers folder DST (--overwrite) would delete the model being read."""
    inner = save_model(load_model(model), sd_folder / "inner")
    before = snapshot(sd_folder)
    assert "inside DST" in refused(capsys, inner, sd_folder, "--overwrite")
    assert snapshot(sd_folder) == before


def test_the_folder_a_model_shares_its_parts_with_is_protected_too(model, tiny_unet_components, tmp_path, capsys):
    """A slim folder reads its VAE from `parts_from`: DST must not replace that VAE."""
    slim = save_model(tiny_unet_components, tmp_path / "slim")
    (slim / "vae.safetensors").unlink()
    with open(slim / CONFIG_FILE, "a") as config:
        config.write("parts_from: ../model\n")
    before = snapshot(model)
    assert "parts_from" in refused(capsys, slim, model / "vae.safetensors", "--overwrite")
    assert snapshot(model) == before


def test_a_lora_being_merged_is_not_the_destination(model, tiny_unet_components, tmp_path, capsys):
    lora = write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "kohya")
    before = lora.read_bytes()
    assert "LoRA" in refused(capsys, model, lora, "--lora", lora, "--overwrite")
    assert lora.read_bytes() == before


# ----------------------------------------------------------------------------- an existing DST


def test_an_existing_file_is_not_replaced_without_overwrite(model, tiny_unet_components, tmp_path, capsys):
    lora = write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "kohya")
    before = lora.read_bytes()
    assert "--overwrite" in refused(capsys, model, lora)
    assert lora.read_bytes() == before
    assert convert.main([str(model), str(lora), "--overwrite"]) == 0
    assert same_denoiser(lora, model)


def test_a_file_that_appears_while_converting_is_kept(model, tmp_path, capsys, monkeypatch):
    """The check before the work is not enough: a real checkpoint takes minutes to write."""
    import safetensors.torch

    target = tmp_path / "out.safetensors"
    write = safetensors.torch.save_file

    def another_writer_first(*args, **kwargs):
        target.write_text("someone else's")
        return write(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", another_writer_first)
    assert "appeared while it was being written" in refused(capsys, model, target)
    assert target.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.safetensors"]


def test_an_existing_diffusers_folder_is_replaced_only_with_overwrite(model, sd_folder, capsys):
    before = snapshot(sd_folder)
    assert "--overwrite" in refused(capsys, model, sd_folder)
    assert snapshot(sd_folder) == before
    assert convert.main([str(model), str(sd_folder), "--overwrite"]) == 0
    assert same_denoiser(sd_folder, model)


def test_other_existing_folders_are_never_replaced(model, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "folder.safetensors").mkdir()
    for target in ("mine", "folder.safetensors"):
        for overwrite in ([], ["--overwrite"]):
            refused(capsys, model, tmp_path / target, *overwrite)
    assert "not a diffusers model folder" in refused(capsys, model, tmp_path / "mine", "--overwrite")
    assert "is a folder" in refused(capsys, model, tmp_path / "folder.safetensors", "--overwrite")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert not any((tmp_path / "folder.safetensors").iterdir())


# ----------------------------------------------------------------------------- built-in names


@pytest.mark.skipif(not is_installed("scenes"), reason="no built-in model in this install")
def test_a_built_in_model_name_is_a_source(tmp_path):
    target = tmp_path / "scenes.safetensors"
    assert convert.main(["scenes", str(target)]) == 0
    assert same_denoiser(target, BUILTIN_MODELS["scenes"].path)


@pytest.mark.skipif(not is_installed("scenes"), reason="no built-in model in this install")
def test_a_path_wins_over_a_built_in_name(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model.rename(tmp_path / "scenes")
    assert convert.main(["scenes", "out.safetensors"]) == 0
    assert same_denoiser(tmp_path / "out.safetensors", tmp_path / "scenes")


def test_an_unknown_source_is_one_line(tmp_path, capsys):
    assert "not found" in refused(capsys, tmp_path / "nowhere", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
