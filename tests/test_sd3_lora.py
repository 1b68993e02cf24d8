"""SD3 LoRAs in diffusers' layout (transformer.*, text_encoder.*, text_encoder_2.*, alpha in the
adapter metadata) against diffusers' StableDiffusion3Pipeline.load_lora_weights on the tiny
random SD3 folder; an SD3 LoRA on a U-Net model and the reverse, each one line. sd-scripts'
SD3 layout: tests/test_sd3_kohya_lora.py."""

import json

import pytest
import torch
from lora_files import random_lora, write_lora
from reference import LastLatents
from safetensors.torch import save_file
from sd3_folder import write_tiny_sd3_folder
from sdxl_lora_files import _adapter_metadata, random_sdxl_lora
from test_sdxl_lora import refused

from ldm.formats.model_folder import save_model
from ldm.lora.apply import read_lora
from ldm.pipeline import Pipeline, make_generators

DRAW = dict(steps=3, cfg=5.0, width=32, height=32, seed=10, prompt_syntax="plain", progress=False)
PROMPT = "a lake at dawn"


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return write_tiny_sd3_folder(tmp_path_factory.mktemp("sd3-lora"), 3.0)


def sd3_lora_for_folder(folder, path, seed: int = 0):
    """A random LoRA for every Linear and Conv2d of the folder's MMDiT and both CLIPs, in the
    layout diffusers' save_lora_weights writes (the MMDiT's part named `transformer`)."""
    from diffusers import StableDiffusion3Pipeline

    parts = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None, local_files_only=True).components
    weights = random_sdxl_lora({"unet": parts["transformer"], "text_encoder": parts["text_encoder"], "text_encoder_2": parts["text_encoder_2"]}, seed)
    state = {}
    for (part, name), (down, up) in weights.items():
        stem = f"{'transformer' if part == 'unet' else part}.{name}"
        state[f"{stem}.lora_A.weight"], state[f"{stem}.lora_B.weight"] = down, up
    header = json.loads(_adapter_metadata(weights)["lora_adapter_metadata"])
    header = {key.replace("unet.", "transformer.", 1): value for key, value in header.items()}
    save_file(state, str(path), metadata={"lora_adapter_metadata": json.dumps(header)})
    return path


def our_latents(pipe, loras=()):
    last = LastLatents()
    pipe.generate(PROMPT, loras=tuple((str(path), weight) for path, weight in loras), callback=last, **DRAW)
    return last.latents


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_sd3_lora_matches_diffusers_load_lora_weights(sd3_folder, tmp_path, weight):
    from diffusers import StableDiffusion3Pipeline

    path = sd3_lora_for_folder(sd3_folder, tmp_path / "style.safetensors")
    pipe = Pipeline.load(sd3_folder)
    base = our_latents(pipe)
    ours = our_latents(pipe, [(path, weight)])
    lora = read_lora(path, pipe.components)
    assert {delta.part for delta in lora.deltas} == {"denoiser", "text_encoder", "text_encoder_2"}

    theirs_pipe = StableDiffusion3Pipeline.from_pretrained(sd3_folder, text_encoder_3=None, tokenizer_3=None, local_files_only=True)
    theirs_pipe.set_progress_bar_config(disable=True)
    theirs_pipe.load_lora_weights(str(path), adapter_name="style")
    theirs_pipe.set_adapters(["style"], [weight])
    theirs = theirs_pipe(
        prompt=[PROMPT], num_inference_steps=DRAW["steps"], guidance_scale=DRAW["cfg"], generator=make_generators([DRAW["seed"]]),
        width=DRAW["width"], height=DRAW["height"], output_type="latent",
    ).images  # fmt: skip
    assert (ours - base).abs().max().item() > 1e-2  # the LoRA does something
    assert (ours - theirs).abs().max().item() < 1e-4
    assert torch.equal(our_latents(pipe), base)  # unloaded after the request, exactly


def test_an_sd3_lora_on_a_u_net_model_is_one_line(sd3_folder, tiny_unet_components, tmp_path, capsys):
    model = save_model(tiny_unet_components, tmp_path / "sd")
    path = sd3_lora_for_folder(sd3_folder, tmp_path / "sd3.safetensors")
    line = refused(capsys, "a lake", "--model", model, "--lora", path, "--out", tmp_path / "x.png")
    assert "this LoRA is for SD3 (an MMDiT); this model is an SD 1.x/2.x-shaped model" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_a_u_net_lora_on_an_sd3_model_is_one_line(sd3_folder, tiny_unet_components, tmp_path, capsys, layout):
    path = write_lora(random_lora(tiny_unet_components), tmp_path / "sd.safetensors", layout)
    line = refused(capsys, "a lake", "--model", sd3_folder, "--lora", path, "--out", tmp_path / "x.png")
    assert line.endswith("this LoRA is for a U-Net model (cross-attention width 32); this model is SD3 (an MMDiT)")
    assert not (tmp_path / "x.png").exists()
