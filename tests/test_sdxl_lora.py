"""SDXL LoRAs (kohya's original block names with lora_te1_/lora_te2_, kohya with diffusers'
names, diffusers' peft layout) against diffusers' StableDiffusionXLPipeline.load_lora_weights on
the same tiny folder; merging into an SDXL folder; an SDXL LoRA on an SD model and the reverse.
Prompt tags through the A1111 API: tests/server/test_sdxl_lora_api.py."""

import pytest
import torch
from lora_files import random_lora, write_lora
from reference import LastLatents
from sdxl_folder import write_tiny_sdxl_folder
from sdxl_lora_files import LAYOUTS, sdxl_lora_for_folder

from ldm.cli import convert, generate
from ldm.diffusion.samplers import make_sampler
from ldm.formats.model_folder import save_model
from ldm.lora.apply import read_lora
from ldm.pipeline import Pipeline, make_generators

DRAW = dict(steps=4, cfg=5.0, sampler="euler", width=32, height=32, seed=10, prompt_syntax="plain", progress=False)
PROMPT = "a lake at dawn"


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl"))


def diffusers_sdxl(folder, pipe):
    from diffusers import StableDiffusionXLPipeline

    reference = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    reference.scheduler = make_sampler(DRAW["sampler"], pipe.components.scheduler_config).scheduler
    reference.set_progress_bar_config(disable=True)
    return reference


def our_latents(pipe, loras=()):
    last = LastLatents()
    pipe.generate(PROMPT, loras=tuple((str(path), weight) for path, weight in loras), callback=last, **DRAW)
    return last.latents


@pytest.mark.parametrize(("layout", "weight"), [("kohya", 1.0), ("kohya", 0.6), ("kohya-diffusers", 1.0), ("peft", 0.6)])
def test_sdxl_lora_matches_diffusers_load_lora_weights(sdxl_folder, tmp_path, layout, weight):
    path = sdxl_lora_for_folder(sdxl_folder, tmp_path / f"style-{layout}.safetensors", layout)
    pipe = Pipeline.load(sdxl_folder)
    base = our_latents(pipe)
    ours = our_latents(pipe, [(path, weight)])

    theirs_pipe = diffusers_sdxl(sdxl_folder, pipe)
    theirs_pipe.load_lora_weights(str(path), adapter_name="style")
    theirs_pipe.set_adapters(["style"], [weight])
    theirs = theirs_pipe(
        prompt=[PROMPT], num_inference_steps=DRAW["steps"], guidance_scale=DRAW["cfg"], generator=make_generators([DRAW["seed"]]),
        width=DRAW["width"], height=DRAW["height"], output_type="latent",
    ).images  # fmt: skip
    assert (ours - base).abs().max().item() > 1e-2  # the LoRA does something
    assert (ours - theirs).abs().max().item() < 1e-4
    assert torch.equal(our_latents(pipe), base)  # unloaded after the request, exactly


def test_each_part_of_a_kohya_file_is_read(sdxl_folder, tmp_path):
    """Every module of the U-Net the original layout names, and both text encoders."""
    pipe = Pipeline.load(sdxl_folder)
    lora = read_lora(sdxl_lora_for_folder(sdxl_folder, tmp_path / "style.safetensors", "kohya"), pipe.components)
    parts = {part: sum(delta.part == part for delta in lora.deltas) for part in ("denoiser", "text_encoder", "text_encoder_2")}
    assert parts["text_encoder"] == parts["text_encoder_2"] == 18  # 3 layers x (q, k, v, out, fc1, fc2)
    assert parts["denoiser"] >= 120


def test_convert_merges_an_sdxl_lora_into_a_folder_that_draws_as_the_applied_lora(sdxl_folder, tmp_path):
    path = sdxl_lora_for_folder(sdxl_folder, tmp_path / "style.safetensors", "kohya")
    assert convert.main([str(sdxl_folder), str(tmp_path / "merged"), "--lora", f"{path}:0.7"]) == 0
    applied = our_latents(Pipeline.load(sdxl_folder), [(path, 0.7)])
    assert torch.equal(our_latents(Pipeline.load(tmp_path / "merged")), applied)


def refused(capsys, *args):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        generate.main([*map(str, args), "--steps", "1", "--quiet"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ldm-generate")]  # transformers' loading bars aside
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_sdxl_lora_on_an_sd_model_is_one_line(sdxl_folder, tiny_unet_components, tmp_path, capsys):
    model = save_model(tiny_unet_components, tmp_path / "sd")
    for layout in LAYOUTS:
        path = sdxl_lora_for_folder(sdxl_folder, tmp_path / f"xl-{layout}.safetensors", layout)
        line = refused(capsys, "a lake", "--model", model, "--lora", path, "--out", tmp_path / "x.png")
        assert "this LoRA is for SDXL" in line and "this model is an SD 1.x/2.x-shaped model (cross-attention width 32)" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_an_sd_lora_on_an_sdxl_model_is_one_line(sdxl_folder, tiny_unet_components, tmp_path, capsys, layout):
    path = write_lora(random_lora(tiny_unet_components), tmp_path / "sd.safetensors", layout)
    line = refused(capsys, "a lake", "--model", sdxl_folder, "--lora", path, "--out", tmp_path / "x.png")
    assert line.endswith("this LoRA is for another model (cross-attention width 32); this model is SDXL (cross-attention width 80)")
    assert not (tmp_path / "x.png").exists()
