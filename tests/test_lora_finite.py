"""LoRAs that would break a model's weights: NaN or infinite tensors in the file, merged
weights that overflow, absurd weights. Refused in one line naming the LoRA, on every path
that applies LoRAs (Python API, ldm-generate's --lora and <lora:> tags, ldm-convert --lora),
and the model is left as it was."""

import importlib
import subprocess
import sys

import pytest
import torch
from in_process import run_in_process
from lora_files import random_lora, write_lora

from ldm.formats.model_folder import save_model
from ldm.lora.apply import LoraError, apply_loras
from ldm.pipeline import Pipeline
from ldm.settings import GenerationError

QUICK = dict(seed=3, steps=1, cfg=5.0, sampler="ddim", progress=False)


def state_of(components) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in components.denoiser.state_dict().items()}


def unchanged(components, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in components.denoiser.state_dict().items())


@pytest.fixture
def style(tiny_unet_components, tmp_path):
    return write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "kohya")


def damaged(components, path, layout, value, scale=1.0):
    """A LoRA file whose first module's up weight is `value` in one place (both halves scaled by `scale`)."""
    weights = random_lora(components)
    name = next(iter(weights))
    a, b = weights[name]
    a, b = a * scale, b * scale
    b[0, 0] = value
    weights[name] = (a, b)
    return write_lora(weights, path, layout)


@pytest.mark.parametrize("layout", ["kohya", "peft"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_lora_file_with_nan_or_infinite_weights_is_refused_naming_it(tiny_unet_components, tmp_path, layout, value):
    path = damaged(tiny_unet_components, tmp_path / "broken.safetensors", layout, value)
    before = state_of(tiny_unet_components)
    with pytest.raises(LoraError, match=r"broken.safetensors: '.*' holds NaN or infinite values") as error:
        apply_loras(tiny_unet_components, [(path, 1.0)])
    assert "\n" not in str(error.value)
    assert unchanged(tiny_unet_components, before)


def test_merged_weights_that_overflow_are_refused_and_the_model_is_left_as_it_was(tiny_unet_components, style, tmp_path):
    # Finite in the file; up @ down is ~1e40, beyond float32.
    huge = damaged(tiny_unet_components, tmp_path / "huge.safetensors", "peft", 1.0, scale=1e20)
    before = state_of(tiny_unet_components)
    with pytest.raises(LoraError, match=r"LoRA .*huge.safetensors at weight 1 makes denoiser .* overflow float32"):
        apply_loras(tiny_unet_components, [(style, 1.0), (huge, 1.0)])  # the first one applied, then undone
    assert unchanged(tiny_unet_components, before)


@pytest.mark.parametrize("weight", [1e30, -1e30, float("nan")])
def test_absurd_weights_are_refused_in_python(tiny_unet_components, style, weight):
    before = state_of(tiny_unet_components)
    with pytest.raises(LoraError, match="style.safetensors: the weight must be"):
        apply_loras(tiny_unet_components, [(style, weight)])
    assert unchanged(tiny_unet_components, before)
    with pytest.raises(GenerationError, match="LoRA style: the weight must be") as error:
        Pipeline(tiny_unet_components).generate("a boat", loras=((str(style), weight),), **QUICK)
    assert str(style.parent) not in str(error.value)  # the server's paths are not the client's business


def test_prompt_tag_weights_out_of_range_are_refused_without_cli_advice(tiny_unet_components, style):
    """What a web client sends: the message names the tag, not a command-line flag."""
    pipe = Pipeline(tiny_unet_components)
    for tag in ("<lora:style:1e308>", "<lora:style:-101>"):
        with pytest.raises(GenerationError, match=f"{tag}: the weight must be between -100 and 100") as error:
            pipe.generate(f"a boat {tag}", lora_dir=str(style.parent), **QUICK)
        assert "--" not in str(error.value)
    pipe.generate("a boat <lora:style:100>", lora_dir=str(style.parent), **QUICK)  # the limit itself is allowed


def run(module, *args, real=False):
    """The command in a fresh interpreter (real) or its main() in this process: exit status, stderr lines."""
    if real:
        process = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)
    else:
        process = run_in_process(module, importlib.import_module(module).main, *args)
    return process.returncode, process.stderr.strip().splitlines()


def test_ldm_convert_refuses_broken_loras_in_one_line_and_writes_nothing(tiny_unet_components, style, tmp_path):
    model = save_model(tiny_unet_components, tmp_path / "model")
    broken = damaged(tiny_unet_components, tmp_path / "broken.safetensors", "kohya", float("nan"))
    huge = damaged(tiny_unet_components, tmp_path / "huge.safetensors", "kohya", 1.0, scale=1e20)
    cases = [(broken, "broken.safetensors: 'lora_unet_"), (huge, "huge.safetensors at weight 1 makes"), (f"{style}:1e30", "between -100 and 100")]
    for i, (lora, message) in enumerate(cases):  # the first through the real command
        status, lines = run("ldm.cli.convert", model, tmp_path / "out.safetensors", "--lora", lora, real=i == 0)
        assert status == 2 and len(lines) == 1 and lines[0].startswith("ldm-convert: error: ") and message in lines[0], lines
        assert not (tmp_path / "out.safetensors").exists()


def test_ldm_generate_refuses_a_broken_lora_tag_in_one_line(tiny_unet_components, tmp_path):
    model = save_model(tiny_unet_components, tmp_path / "model")
    (tmp_path / "loras").mkdir()
    damaged(tiny_unet_components, tmp_path / "loras" / "broken.safetensors", "kohya", float("nan"))
    status, lines = run("ldm.cli.generate", "a boat <lora:broken>", "--model", model, "--lora-dir", tmp_path / "loras", "--steps", "1", "--out", tmp_path / "out.png")
    assert status == 2 and len(lines) == 1 and "broken.safetensors: 'lora_unet_" in lines[0], lines
    assert not (tmp_path / "out.png").exists()
