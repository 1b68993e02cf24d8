"""kill -9 during a save, then the next command: a model folder the kill left aside
(.NAME.old-*, between the two renames of its swap) is found by everything that opens a
model by path, and what a killed single-file write left is removed by the next write there."""

import os
from pathlib import Path

import pytest
from kill_between_renames import kill_while_saving_again, left_aside, run_until_killed

from ldm.cli import convert, generate, inpaint
from ldm.cli.serve import model_entries
from ldm.control.library import ControlNets
from ldm.control.model import controlnet_from_unet, save_controlnet
from ldm.formats.model_folder import is_model_folder, load_component, load_model, save_model
from ldm.pipeline import Pipeline


@pytest.fixture
def backbone() -> str:
    """The U-Net is enough here (ControlNets and single files need it): half the time."""
    return "unet"


@pytest.fixture
def model(tmp_path, tiny_components):
    return save_model(tiny_components, tmp_path / "runs" / "x" / "model")


def test_ldm_generate_finds_the_model_a_kill_between_the_renames_left_aside(tmp_path, model):
    marker = tmp_path / "stopped"
    kill_while_saving_again(model, marker)
    assert not model.exists()  # the moment of the kill: the old folder aside, the new one not yet in
    out = tmp_path / "lake.png"
    assert generate.main(["a lake", "--model", str(model), "--steps", "1", "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and is_model_folder(model)
    assert not [name for name in os.listdir(model.parent) if name.startswith(".model.old-")]


def open_with_load_model(model, tmp_path):
    load_model(model)


def open_with_pipeline(model, tmp_path):
    Pipeline.load(model)


def open_with_ldm_inpaint(model, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), "gray").save(tmp_path / "photo.png")
    Image.new("L", (32, 32), "white").save(tmp_path / "mask.png")
    argv = ["a cat", "--model", str(model), "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
            "--steps", "1", "--out", str(tmp_path / "out.png"), "--quiet"]  # fmt: skip
    assert inpaint.main(argv) == 0


def open_with_ldm_serve(model, tmp_path):
    assert [entry.path for entry in model_entries([str(model)])] == [model]


def open_with_ldm_convert(model, tmp_path):
    assert convert.main([str(model), str(tmp_path / "one.safetensors")]) == 0


def open_as_vae_from(model, tmp_path):
    load_component(model, "vae")


@pytest.mark.parametrize("open_model", [open_with_load_model, open_with_pipeline, open_with_ldm_inpaint, open_with_ldm_serve,
                                        open_with_ldm_convert, open_as_vae_from])  # fmt: skip
def test_every_loader_puts_back_a_model_folder_a_kill_left_aside(tmp_path, model, open_model):
    left_aside(model)
    open_model(model, tmp_path)
    assert is_model_folder(model)


def test_controlnets_a_kill_left_aside_are_found(tmp_path, model, tiny_components):
    net = controlnet_from_unet(tiny_components.denoiser, vae_scale=2)
    own = save_controlnet(net, "canny", model / "controlnet" / "edges")
    given = save_controlnet(net, "depth", tmp_path / "depth-net")
    left_aside(own), left_aside(given)
    found = ControlNets.for_model(model, [str(given)])
    assert [entry.describe() for entry in found.entries] == ["edges (canny)", "depth-net (depth)"]
    assert found.named("edges").load("cpu", None) is not None


def test_a_killed_single_file_write_is_removed_by_the_next_write_there(tmp_path, model):
    """ldm-convert killed just before its temporary file is renamed into place: a whole
    checkpoint under a hidden name, which the next ldm-convert into that folder removes."""
    out = tmp_path / "out"
    marker = tmp_path / "stopped"
    run_until_killed(f"""
from pathlib import Path
from kill_between_renames import stop_before_rename_into
from ldm.cli import convert
stop_before_rename_into(Path({str(out / "one.safetensors")!r}), Path({str(marker)!r}))
convert.main([{str(model)!r}, {str(out / "one.safetensors")!r}])
""", marker)
    left = [name for name in os.listdir(out) if name.startswith(".one.safetensors.tmp-")]
    assert len(left) == 1 and (out / left[0]).stat().st_size > 0
    assert convert.main([str(model), str(out / "two.safetensors")]) == 0
    assert sorted(os.listdir(out)) == ["two.safetensors"]


def test_a_single_file_write_removes_what_a_killed_write_of_it_left(tmp_path, model):
    from kill_between_renames import dead_pid

    out = tmp_path / "one.safetensors"
    (tmp_path / f".one.safetensors.tmp-{dead_pid()}-abcd1234").write_bytes(b"half")
    assert convert.main([str(model), str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["runs", "one.safetensors"])
    assert Path(out).stat().st_size > 4
