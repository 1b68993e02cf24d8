"""ldm-generate / ldm-inpaint with --control: the model folder's ControlNets, --controlnet
folders, the PNG's ControlNet entries, and bad input (one line, exit 2, no file)."""

import importlib
import subprocess
import sys

import pytest
from in_process import run_in_process
from PIL import Image

from ldm.control.model import load_controlnet, save_controlnet
from tiny_controlnets import steering_controlnet
from ldm.png_info import parse_parameters


@pytest.fixture
def controlled_model_dir(tiny_model_dir, controlnet):
    save_controlnet(controlnet, "canny", tiny_model_dir / "controlnet" / "edges")
    return tiny_model_dir


def run_cli(module, *args):
    """In this process (the real entry points run in tests/cli): exit status, stderr."""
    process = run_in_process(module, importlib.import_module(module).main, *args)
    return process.returncode, process.stderr


def test_a_saved_controlnet_loads_back_equal(tmp_path, controlnet):
    path = save_controlnet(controlnet, "layout", tmp_path / "net")
    again = load_controlnet(path)
    assert all(a.equal(b) for a, b in zip(controlnet.state_dict().values(), again.state_dict().values()))
    assert not list(tmp_path.glob(".*"))  # no staging leftovers


def test_export_fp16_halves_a_controlnet_folder_and_keeps_its_type(tmp_path, controlnet):
    from pathlib import Path

    import torch

    from ldm.control.model import control_type_of

    save_controlnet(controlnet, "layout", tmp_path / "net")
    tool = Path(__file__).resolve().parents[2] / "tools" / "export_fp16.py"
    run = subprocess.run([sys.executable, str(tool), str(tmp_path / "net"), str(tmp_path / "half")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from safetensors.torch import load_file

    stored = load_file(next((tmp_path / "half").glob("*.safetensors")))
    assert control_type_of(tmp_path / "half") == "layout"
    for name, a in controlnet.state_dict().items():
        assert stored[name].dtype == torch.float16 and torch.equal(a.half(), stored[name]), name
    assert load_controlnet(tmp_path / "half") is not None  # and it loads


def test_generate_with_the_models_controlnet(controlled_model_dir, tmp_path, photo):
    photo.resize((48, 48)).save(tmp_path / "photo.png")
    out = tmp_path / "out.png"
    status, stderr = run_cli(
        "ldm.cli.generate", "a lake", "--model", controlled_model_dir, "--steps", 2, "--seed", 1, "--out", out,
        "--control", tmp_path / "photo.png", "--control-type", "canny", "--control-scale", 0.5, "--control-end", 0.5,
    )  # fmt: skip
    assert status == 0, stderr
    assert "control image 0 48x48 resized to 32x32" in stderr
    parameters = parse_parameters(Image.open(out).text["parameters"])
    assert parameters["ControlNet 0"] == "Module: canny, Model: edges, Weight: 0.5, Guidance Start: 0, Guidance End: 0.5"


def test_a_diffusers_controlnet_folder_and_two_units(tiny_model_dir, tmp_path, controlnet, second_controlnet, photo, edges):
    controlnet.save_pretrained(tmp_path / "sd-canny", safe_serialization=True)  # no control.json: type not recorded
    save_controlnet(second_controlnet, "layout", tmp_path / "scene")
    photo.save(tmp_path / "photo.png")
    edges.save(tmp_path / "edges.png")
    out = tmp_path / "out.png"
    status, stderr = run_cli(
        "ldm.cli.inpaint", "a boat", "--model", tiny_model_dir, "--image", tmp_path / "photo.png",
        "--mask", tmp_path / "edges.png", "--steps", 2, "--seed", 1, "--out", out,
        "--controlnet", tmp_path / "sd-canny", "--controlnet", tmp_path / "scene",
        "--control", tmp_path / "edges.png", "--control-type", "canny",
        "--control", tmp_path / "photo.png", "--control-type", "layout", "--control-scale", 1, "--control-scale", 0.3,
    )  # fmt: skip
    assert status == 0, stderr
    parameters = parse_parameters(Image.open(out).text["parameters"])
    assert parameters["ControlNet 0"].startswith("Module: canny, Model: sd-canny, Weight: 1,")
    assert parameters["ControlNet 1"].startswith("Module: layout, Model: scene, Weight: 0.3,")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--control-type", "depth"], "control: unknown control type 'depth'; known types: canny, layout, raw"),
        (["--control-scale", "-1"], "control: control scale must be a finite number >= 0, got -1"),
        (["--control-start", "0.8", "--control-end", "0.2"], "control: control start (0.8) is after its end (0.2)"),
        (["--control-type", "layout"], "no ControlNet for control type 'layout'; the model has: edges (canny)"),
        (["--control-model", "pose"], "no ControlNet named 'pose'; the model has: edges (canny)"),
        (["--control-scale", "1", "--control-scale", "2"], "--control-scale has 2 value(s) for 1 --control image(s)"),
    ],
)
def test_bad_control_input_is_one_line_and_no_file(controlled_model_dir, tmp_path, photo, args, message):
    photo.save(tmp_path / "photo.png")
    out = tmp_path / "out" / "x.png"
    status, stderr = run_cli("ldm.cli.generate", "a lake", "--model", controlled_model_dir, "--steps", 1, "--out", out,
                             "--control", tmp_path / "photo.png", *args)  # fmt: skip
    assert status == 2
    assert stderr.strip() == f"ldm-generate: error: {message}"
    assert not out.exists()


def test_unreadable_control_image_and_model_without_controlnet(tiny_model_dir, tmp_path, photo):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "x.png"
    status, stderr = run_cli("ldm.cli.generate", "a", "--model", tiny_model_dir, "--out", out, "--control", tmp_path / "broken.png")
    assert (status, stderr.strip()) == (2, f"ldm-generate: error: control image {tmp_path / 'broken.png'} is not an image")
    photo.save(tmp_path / "photo.png")
    status, stderr = run_cli("ldm.cli.generate", "a", "--model", tiny_model_dir, "--steps", 1, "--out", out,
                             "--control", tmp_path / "photo.png", "--control-type", "canny")  # fmt: skip
    assert status == 2
    assert stderr.strip() == (
        "ldm-generate: error: no ControlNet for control type 'canny'; "
        "the model has no ControlNet (give one with --controlnet DIR)"
    )
    assert not out.exists()


def pickled_controlnet(folder, components):
    steering_controlnet(components, 1).save_pretrained(folder, safe_serialization=False)  # a .bin


def controlnet_of_another_model(folder, components):
    """Whole and readable, but made for a U-Net with wider blocks."""
    from tiny import build_tiny

    save_controlnet(steering_controlnet(build_tiny(unet__block_out_channels=[24, 48]), 1), "canny", folder)


def weights_not_fitting_their_config(folder, components):
    controlnet_of_another_model(folder, components)
    wide_weights = (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    save_controlnet(steering_controlnet(components, 1), "canny", folder)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(wide_weights)


@pytest.mark.parametrize(
    "make, message",
    [
        (pickled_controlnet, "{net}/diffusion_pytorch_model.bin is a pickled checkpoint; refused"),
        (controlnet_of_another_model, "ControlNet net does not fit this model: its config has block_out_channels [24, 48], "
                                      "layers_per_block 1; this model's U-Net block_out_channels [16, 32], layers_per_block 1"),
        (weights_not_fitting_their_config, "cannot read ControlNet folder {net}: its weights do not fit its config.json "
                                           "(controlnet_cond_embedding.conv_out.bias is torch.Size([24]), the config makes it torch.Size([16]))"),
    ],
)  # fmt: skip
def test_a_controlnet_that_cannot_steer_the_model_is_one_line_before_sampling(tiny_model_dir, tiny_components, tmp_path, photo, make, message):
    make(tmp_path / "net", tiny_components)
    photo.save(tmp_path / "photo.png")
    out = tmp_path / "out.png"
    status, stderr = run_cli("ldm.cli.generate", "a lake", "--model", tiny_model_dir, "--steps", 1, "--out", out,
                             "--control", tmp_path / "photo.png", "--controlnet", tmp_path / "net")  # fmt: skip
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("ldm-generate: error: " + message.format(net=tmp_path / "net")), stderr
    assert not out.exists()


def test_the_python_api_refuses_it_before_the_first_step(tiny_components, tmp_path):
    from ldm.control.library import ControlNets
    from ldm.control.units import ControlUnit
    from ldm.pipeline import Pipeline
    from ldm.settings import GenerationError

    controlnet_of_another_model(tmp_path / "net", tiny_components)
    pipe = Pipeline(tiny_components, ControlNets.for_model(None, [tmp_path / "net"]))
    steps = []
    with pytest.raises(GenerationError, match="ControlNet net does not fit this model"):
        pipe.generate("a lake", steps=2, controls=(ControlUnit(Image.new("RGB", (32, 32)), type="canny"),), callback=steps.append)
    assert steps == []
