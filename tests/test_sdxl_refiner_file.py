"""SDXL refiners as single files in the original layout: ldm-convert writes one from a refiner
folder and back; diffusers' StableDiffusionXLImg2ImgPipeline.from_single_file(config=folder)
reads ours as the folder; `--refiner FILE` hands off as diffusers does with that file; a refiner
file as the model, or a base file as the refiner, is one line."""

import json

import pytest
import torch
from reference import LastLatents
from safetensors.torch import load_file, save_file
from sdxl_folder import SDXL_SHAPED, write_tiny_refiner_folder, write_tiny_sdxl_folder

from ldm.cli.convert import main as convert
from ldm.cli.generate import main as generate
from ldm.diffusion.samplers import make_sampler
from ldm.formats.model_folder import ModelError, load_model, load_refiner
from ldm.pipeline import Pipeline, make_generators

STEPS = 5
PARTS = ("unet", "vae", "text_encoder_2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner-file")
    return write_tiny_sdxl_folder(root, SDXL_SHAPED), write_tiny_refiner_folder(root, SDXL_SHAPED)


@pytest.fixture(scope="module")
def refiner_file(folders, tmp_path_factory):
    path = tmp_path_factory.mktemp("refiner-out") / "refiner.safetensors"
    assert convert([str(folders[1]), str(path)]) == 0
    return path


def weights(pipe) -> dict:
    return {part: getattr(pipe, part).state_dict() for part in PARTS}


def assert_same_weights(first: dict, second: dict):
    for part in PARTS:
        assert first[part].keys() == second[part].keys(), part
        assert all(torch.equal(first[part][k], second[part][k]) for k in first[part]), part


def from_folder(folder):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return StableDiffusionXLImg2ImgPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)


def test_the_file_uses_the_original_key_names(refiner_file):
    """bigG under open_clip's names as embedders.0, a mid block as deep as the attention levels."""
    keys = set(load_file(str(refiner_file)))
    for key in ("conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", "conditioner.embedders.0.model.text_projection",
                "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.middle_block.1.transformer_blocks.1.attn2.to_k.weight",
                "first_stage_model.decoder.mid.attn_1.q.weight"):  # fmt: skip
        assert key in keys
    assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in keys)


def test_diffusers_reads_our_file_as_the_folder(folders, refiner_file):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    theirs = StableDiffusionXLImg2ImgPipeline.from_single_file(str(refiner_file), config=str(folders[1]), local_files_only=True)
    assert_same_weights(weights(theirs), weights(from_folder(folders[1])))


def test_we_read_the_file_as_the_folder(folders, refiner_file):
    file, folder = load_refiner(refiner_file), load_refiner(folders[1])
    assert_same_weights(
        {"unet": file.denoiser.state_dict(), "vae": file.vae.state_dict(), "text_encoder_2": file.first_text_encoder.model.state_dict()},
        {"unet": folder.denoiser.state_dict(), "vae": folder.vae.state_dict(), "text_encoder_2": folder.first_text_encoder.model.state_dict()},
    )  # fmt: skip
    assert not file.conditioner.zeros_for_empty_negative and file.vae.config.scaling_factor == 0.13025
    assert file.denoiser.config.projection_class_embeddings_input_dim == folder.denoiser.config.projection_class_embeddings_input_dim
    tokens = [c.tokenizer("a lake").input_ids for c in (file.first_text_encoder, folder.first_text_encoder)]
    assert tokens[0] == tokens[1]


def test_the_hand_off_to_a_file_matches_diffusers(folders, refiner_file, tmp_path, sampler="dpm++2m", negative="blurry"):
    """A file as other tools write them (bigG's logit scale kept), read by us (--refiner FILE)
    and by diffusers' from_single_file: the same latents after the refiner's steps."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base, folder = folders
    state = load_file(str(refiner_file))
    state["conditioner.embedders.0.model.logit_scale"] = torch.tensor(4.6)
    file = tmp_path / "other-tool.safetensors"
    save_file(state, str(file))
    pipe, last = Pipeline.load(base), LastLatents()
    options = dict(steps=STEPS, cfg=5.0, sampler=sampler, width=48, height=32, prompt_syntax="plain", negative=negative)
    pipe.generate("a lake at dawn", n=2, seed=3, callback=last, progress=False, refiner=str(file), refiner_switch=0.6, **options)
    common = dict(prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None, num_inference_steps=STEPS,
                  guidance_scale=5.0, generator=make_generators([3, 4]), output_type="latent")  # fmt: skip
    first = StableDiffusionXLPipeline.from_pretrained(base, local_files_only=True, use_safetensors=True)
    second = StableDiffusionXLImg2ImgPipeline.from_single_file(str(file), config=str(folder), local_files_only=True)
    for ref in (first, second):
        ref.scheduler = make_sampler(sampler, pipe.components.scheduler_config).scheduler
        ref.set_progress_bar_config(disable=True)
    handed = first(width=48, height=32, denoising_end=0.6, **common).images
    theirs = second(image=handed, denoising_start=0.6, **common).images
    assert last.latents.shape == theirs.shape == (2, 4, 16, 24)
    assert (last.latents - theirs).abs().max().item() < 1e-4
    assert not torch.allclose(theirs, handed)


def test_a_file_converts_back_to_a_refiner_folder(folders, refiner_file, tmp_path):
    target = tmp_path / "back"
    assert convert([str(refiner_file), str(target)]) == 0
    back = from_folder(target)
    assert_same_weights(weights(back), weights(from_folder(folders[1])))
    index = json.loads((target / "model_index.json").read_text())
    assert index["requires_aesthetics_score"] and not index["force_zeros_for_empty_prompt"] and index["text_encoder"] == [None, None]
    assert back.tokenizer_2.pad_token == "!"
    assert load_refiner(target).denoiser.config.transformer_layers_per_block == [1, 2, 2]


@pytest.mark.parametrize(("given", "message"), [
    (["--model", "REFINER"], "give it with --refiner"),
    (["--model", "BASE", "--refiner", "BASE_FILE"], "is not an SDXL refiner"),
])  # fmt: skip
def test_a_file_in_the_wrong_role_is_one_line(folders, refiner_file, tmp_path, capsys, given, message):
    base_file = refiner_file.parent / "base.safetensors"
    if not base_file.exists():
        assert convert([str(folders[0]), str(base_file)]) == 0
    names = {"REFINER": str(refiner_file), "BASE": str(folders[0]), "BASE_FILE": str(base_file)}
    out = tmp_path / "x.png"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        generate(["a lake", "--steps", "2", "--out", str(out), *[names.get(arg, arg) for arg in given]])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ModelError, match="--refiner"):
        load_model(refiner_file)
