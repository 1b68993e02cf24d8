"""SDXL single files in the original layout: ldm-convert writes them from an SDXL folder and
back; diffusers' from_single_file reads ours as the folder, we read a file as diffusers does;
keys of no known family are one-line refusals (refiner files: tests/test_sdxl_refiner_file.py)."""

import numpy as np
import pytest
import torch
from reference import LastLatents
from safetensors.torch import load_file, save_file
from sdxl_folder import SDXL_SHAPED, write_tiny_sdxl_folder

from ldm.cli.convert import main as convert
from ldm.formats.model_folder import ModelError, load_model
from ldm.pipeline import Pipeline, make_generators

STEPS = 3
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl-shaped"), SDXL_SHAPED)


@pytest.fixture(scope="module")
def sdxl_file(sdxl_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("sdxl-file") / "sdxl.safetensors"
    assert convert([str(sdxl_folder), str(path)]) == 0
    return path


def state_dicts(components) -> dict:
    names = dict(zip(PARTS, ("denoiser", "vae", "text_encoder", "text_encoder_2")))
    return {part: components.modules()[names[part]].state_dict() for part in PARTS}


def assert_same_weights(first: dict, second: dict):
    for part in PARTS:
        assert first[part].keys() == second[part].keys(), part
        assert all(torch.equal(first[part][k], second[part][k]) for k in first[part]), part


def pixels(model, sampler="dpm++2m"):
    result = Pipeline.load(model).generate("a lake at dawn", steps=STEPS, seed=5, sampler=sampler, width=32, height=48, progress=False)
    return np.asarray(result.images[0]).astype(int)


def test_the_file_uses_the_original_key_names(sdxl_file):
    keys = set(load_file(str(sdxl_file)))
    expected = {
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.1.2.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight",
        "conditioner.embedders.1.model.text_projection",
        "conditioner.embedders.1.model.positional_embedding",
    }
    assert expected - keys == set()
    assert not any(k.startswith(("unet.", "text_encoder", "add_embedding", "model.diffusion_model.down_blocks")) for k in keys)


def test_the_file_draws_what_the_folder_draws(sdxl_folder, sdxl_file):
    """Same weights, same configs; pixels within one level (the folder's weights are read from
    unaligned memory, which rounds a BLAS sum differently in the last bit)."""
    folder, file = load_model(sdxl_folder), load_model(sdxl_file)
    assert_same_weights(state_dicts(folder), state_dicts(file))
    settings = [{k: v for k, v in model.denoiser.config.items() if not k.startswith("_")} for model in (file, folder)]
    assert settings[0] == settings[1]
    assert file.conditioner.zeros_for_empty_negative and file.vae.config.scaling_factor == 0.13025
    for sampler in ("dpm++2m", "ddim"):
        assert np.abs(pixels(sdxl_folder, sampler) - pixels(sdxl_file, sampler)).max() <= 1


def test_diffusers_reads_our_file_as_the_folder(sdxl_folder, sdxl_file):
    from diffusers import StableDiffusionXLPipeline

    theirs = StableDiffusionXLPipeline.from_single_file(str(sdxl_file), config=str(sdxl_folder), local_files_only=True)
    folder = StableDiffusionXLPipeline.from_pretrained(sdxl_folder, local_files_only=True, use_safetensors=True)
    assert_same_weights({p: getattr(theirs, p).state_dict() for p in PARTS}, {p: getattr(folder, p).state_dict() for p in PARTS})


def test_we_read_a_file_as_diffusers_does(sdxl_folder, sdxl_file, tmp_path):
    """A file as other tools write them (the buffers and logit scale they carry), read by us and
    by diffusers' from_single_file: the same latents."""
    from diffusers import StableDiffusionXLPipeline

    from ldm.diffusion.samplers import make_sampler

    state = load_file(str(sdxl_file))
    state["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6)
    file = tmp_path / "other-tool.safetensors"
    save_file(state, str(file))
    ours = Pipeline.load(file)
    last = LastLatents()
    ours.generate("a red boat", negative="blurry", n=2, steps=STEPS, cfg=5.0, sampler="euler", seed=7, width=48, height=32,
                  callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    theirs = StableDiffusionXLPipeline.from_single_file(str(file), config=str(sdxl_folder), local_files_only=True)
    theirs.scheduler = make_sampler("euler", ours.components.scheduler_config).scheduler
    theirs.set_progress_bar_config(disable=True)
    latents = theirs(
        prompt=["a red boat"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=STEPS, guidance_scale=5.0,
        generator=make_generators([7, 8]), width=48, height=32, output_type="latent",
    ).images  # fmt: skip
    assert (last.latents - latents).abs().max().item() < 1e-4


def test_a_file_converts_back_to_a_folder(sdxl_folder, sdxl_file, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    target = tmp_path / "back"
    assert convert([str(sdxl_file), str(target)]) == 0
    back = StableDiffusionXLPipeline.from_pretrained(target, local_files_only=True, use_safetensors=True)
    folder = StableDiffusionXLPipeline.from_pretrained(sdxl_folder, local_files_only=True, use_safetensors=True)
    assert_same_weights({p: getattr(back, p).state_dict() for p in PARTS}, {p: getattr(folder, p).state_dict() for p in PARTS})
    assert back.tokenizer_2.pad_token == "!" and back.config.force_zeros_for_empty_prompt
    assert np.array_equal(pixels(target), pixels(sdxl_file))


def refused(capsys, state: dict, tmp_path) -> str:
    """ldm-convert's one-line refusal of a file holding `state`; nothing is written."""
    source, target = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file(state, str(source))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        convert([str(source), str(target)])
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and len(error.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
    with pytest.raises(ModelError):
        load_model(source)
    return error


def test_a_base_u_net_behind_a_refiners_text_side_is_one_line(sdxl_file, tmp_path, capsys):
    """bigG as embedders.0 (a refiner's text side) before a base's U-Net (six size ids): no refiner."""
    state = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v for k, v in load_file(str(sdxl_file)).items()
             if not k.startswith("conditioner.embedders.0.")}  # fmt: skip
    assert "not 5 time ids' worth" in refused(capsys, state, tmp_path)


@pytest.mark.parametrize("keys", [
    ["model.diffusion_model.x", "first_stage_model.x", "conditioner.embedders.0.transformer.x"],  # half an SDXL text side
    ["model.diffusion_model.x", "first_stage_model.x"],  # no text encoder
    ["transformer.blocks.0.weight", "vae.decoder.weight"],  # another family
])  # fmt: skip
def test_keys_of_no_known_family_are_refused_in_one_line(keys, tmp_path, capsys):
    error = refused(capsys, {key: torch.zeros(1) for key in keys}, tmp_path)
    assert "keys fit no known family (SD 1.x, SD 2.x, SDXL" in error


def test_a_damaged_sdxl_file_is_one_line(sdxl_file, tmp_path, capsys):
    state = load_file(str(sdxl_file))
    del state["model.diffusion_model.label_emb.0.0.weight"]
    assert "cannot read the architecture from its weights" in refused(capsys, state, tmp_path)
