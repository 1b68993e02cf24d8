"""SD3 diffusers folders: ours against diffusers' StableDiffusion3Pipeline on the same tiny
random folder (an MMDiT, a 16-channel VAE with a shift factor, two CLIPs, with and without T5)."""

import shutil

import pytest
from reference import LastLatents
from sd3_folder import JOINT_WIDTH, LATENT_CHANNELS, write_tiny_sd3_folder

from ldm.cli.generate import main as generate_main
from ldm.models.weights import ModelError
from ldm.pipeline import Pipeline, make_generators

STEPS = 4


@pytest.fixture(scope="module")
def sd3_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    return {shift: write_tiny_sd3_folder(root, shift) for shift in (3.0, 1.0)}


@pytest.fixture(scope="module")
def t5_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3-t5")
    return {shift: write_tiny_sd3_folder(root, shift, t5=True) for shift in (3.0, 1.0)}


def reference(folder):
    from diffusers import StableDiffusion3Pipeline

    without_t5 = {} if (folder / "text_encoder_3").is_dir() else {"text_encoder_3": None, "tokenizer_3": None}
    ref = StableDiffusion3Pipeline.from_pretrained(folder, **without_t5, local_files_only=True, use_safetensors=True)
    ref.set_progress_bar_config(disable=True)
    return ref


def test_the_context_is_both_clips_padded_then_zeros_for_the_missing_t5(sd3_folders):
    pipe = Pipeline.load(sd3_folders[3.0])
    cond = pipe.encode_text(["a lake"])
    assert cond.tokens.shape == (1, 77 + 256, JOINT_WIDTH) and cond.pooled.shape == (1, 48)
    assert cond.tokens[:, :, 80:].abs().max() == 0 and cond.tokens[:, 77:].abs().max() == 0
    assert pipe.components.vae.config.latent_channels == LATENT_CHANNELS
    assert not pipe.components.conditioner.zeros_for_empty_negative


@pytest.mark.parametrize(("shift", "cfg", "negative", "size"), [
    (3.0, 5.0, "", (32, 32)),
    (3.0, 7.0, "blurry", (48, 32)),
    (1.0, 4.0, "ugly", (32, 48)),
])  # fmt: skip
def test_txt2img_matches_diffusers(sd3_folders, shift, cfg, negative, size):
    check_txt2img(sd3_folders[shift], cfg, negative, size, "plain")


@pytest.mark.parametrize(("shift", "cfg", "negative", "size", "syntax"), [
    (3.0, 5.0, "", (32, 32), "plain"),
    (1.0, 6.0, "blurry red", (48, 32), "a1111"),  # unweighted: A1111's reading is the tokenizer's
])  # fmt: skip
def test_txt2img_with_t5_matches_diffusers(t5_folders, shift, cfg, negative, size, syntax):
    check_txt2img(t5_folders[shift], cfg, negative, size, syntax)


def check_txt2img(folder, cfg, negative, size, syntax):
    pipe = Pipeline.load(folder)
    width, height = size
    last = LastLatents()
    pipe.generate("a lake at dawn", negative=negative, n=2, seed=10, callback=last, progress=False, steps=STEPS, cfg=cfg,
                  width=width, height=height, prompt_syntax=syntax)  # fmt: skip
    theirs = reference(folder)(prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None, num_inference_steps=STEPS,
                 guidance_scale=cfg, generator=make_generators([10, 11]), width=width, height=height, output_type="latent").images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, LATENT_CHANNELS, height // 2, width // 2)  # a 2-level VAE
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_decodes_with_the_shift_factor_as_diffusers(sd3_folders):
    import numpy as np

    folder = sd3_folders[3.0]
    ours = Pipeline.load(folder).generate("a boat", steps=2, width=32, height=32, seed=1, cfg=3.0, progress=False, prompt_syntax="plain")
    theirs = reference(folder)(prompt="a boat", num_inference_steps=2, guidance_scale=3.0, generator=make_generators([1]), width=32, height=32).images[0]
    difference = np.abs(np.asarray(ours.images[0], dtype=int) - np.asarray(theirs, dtype=int))
    assert difference.max() <= 1


def test_ldm_generate_draws_an_sd3_folder(sd3_folders, tmp_path):
    out = tmp_path / "out.png"
    assert generate_main(["a lake", "--model", str(sd3_folders[3.0]), "--steps", "2", "--width", "32",
                          "--height", "32", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert out.is_file()


def test_the_t5_tokens_follow_the_clip_chunk(t5_folders):
    cond = Pipeline.load(t5_folders[3.0]).encode_text(["a lake"])
    assert cond.tokens.shape == (1, 77 + 256, JOINT_WIDTH) and cond.tokens[:, 77:].abs().max() > 0


@pytest.mark.parametrize("missing", ["text_encoder_2", "tokenizer"])
def test_a_folder_missing_a_text_encoder_is_one_line(sd3_folders, tmp_path, missing, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(sd3_folders[3.0], broken)
    shutil.rmtree(broken / missing)
    with pytest.raises(ModelError, match=f"no {missing}/ folder"):
        Pipeline.load(broken)
    with pytest.raises(SystemExit) as exit:
        generate_main(["x", "--model", str(broken), "--out", str(tmp_path / "x.png")])
    assert exit.value.code == 2 and not (tmp_path / "x.png").exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"no {missing}/ folder" in err


@pytest.mark.parametrize(("call", "message"), [
    (lambda pipe, photo: pipe.generate("a cat", steps=2, sampler="euler", progress=False), "does not apply to a flow-matching model"),
])  # fmt: skip
def test_what_sd3_does_not_do_yet_is_refused_in_one_line(sd3_folders, call, message):
    from PIL import Image

    from ldm.errors import LdmError

    pipe = Pipeline.load(sd3_folders[3.0])
    with pytest.raises(LdmError, match=message) as error:
        call(pipe, Image.new("RGB", (32, 32), "gray"))
    assert "\n" not in str(error.value)


def test_a_u_net_lora_on_an_sd3_model_is_refused_in_one_line(sd3_folders, tmp_path):
    import torch
    from safetensors.torch import save_file

    from ldm.errors import LdmError

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 4), "lora_unet_x.lora_up.weight": torch.zeros(4, 1)}, str(lora))
    with pytest.raises(LdmError, match="this LoRA is for a U-Net model; this model is SD3"):
        Pipeline.load(sd3_folders[3.0]).generate("a cat <lora:style:1>", lora_dir=str(tmp_path), steps=2, progress=False)


@pytest.mark.parametrize("missing", ["text_encoder_3", "tokenizer_3"])
def test_a_folder_missing_the_t5_it_names_is_one_line(t5_folders, tmp_path, missing):
    broken = tmp_path / "broken"
    shutil.copytree(t5_folders[3.0], broken)
    shutil.rmtree(broken / missing)
    with pytest.raises(ModelError, match=f"no {missing}/ folder"):
        Pipeline.load(broken)


def test_a_weight_reaches_the_t5_tokens_of_its_words(t5_folders):
    """T5 has no start mark: a word's weight scales its own token (the first), not the next."""
    from ldm.models.text_conditioner import token_weights
    from ldm.prompts.chunks import Chunk

    weights = token_weights([Chunk(tokens=[4, 5], weights=[1.5, 1.0])], 6, marks=0)
    assert weights[0].tolist() == [1.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    result = Pipeline.load(t5_folders[3.0]).generate("a (lake:1.4) at dawn", steps=2, width=32, height=32, progress=False)
    assert result.images[0].size == (32, 32)
