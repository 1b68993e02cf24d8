"""LoRAs from the command line: --lora and <lora:NAME:WEIGHT> on ldm-generate and ldm-inpaint,
the PNG's Lora hashes, one-line errors, and ldm-convert --lora merging."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from in_process import run_in_process
from lora_files import RANK, random_lora, write_lora
from PIL import Image
from safetensors.torch import save_file
from tiny import build_tiny

from ldm.cli import convert, generate, inpaint
from ldm.formats.model_folder import load_model, save_model
from ldm.lora.apply import apply_loras
from ldm.lora.refs import file_hash
from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters

QUICK = ["--seed", "3", "--steps", "2", "--cfg", "5", "--sampler", "ddim", "--quiet"]


@pytest.fixture
def model(tiny_unet_components, tmp_path):
    return save_model(tiny_unet_components, tmp_path / "model")


@pytest.fixture
def style(tiny_unet_components, tmp_path):
    (tmp_path / "loras").mkdir()
    return write_lora(random_lora(tiny_unet_components), tmp_path / "loras" / "style.safetensors", "kohya")


def generated(tmp_path, name, *args) -> Image.Image:
    out = tmp_path / name
    assert generate.main([*map(str, args), *QUICK, "--out", str(out)]) == 0
    return Image.open(out)


def test_lora_flag_draws_what_the_python_api_draws_and_the_png_names_it(model, style, tmp_path):
    image = generated(tmp_path, "cli.png", "a red boat", "--model", model, "--lora", f"{style}:0.8")
    pipe = Pipeline(load_model(model))
    api = pipe.generate("a red boat", loras=((str(style), 0.8),), seed=3, steps=2, cfg=5.0, sampler="ddim", progress=False)
    assert np.array_equal(np.asarray(image), np.asarray(api.images[0]))
    assert not np.array_equal(np.asarray(image), np.asarray(generated(tmp_path, "base.png", "a red boat", "--model", model)))
    assert parse_parameters(image.text["parameters"])["Lora hashes"] == f"style: {file_hash(style)}"


def test_prompt_tag_in_lora_dir_equals_the_flag(model, style, tmp_path):
    tagged = generated(tmp_path, "tag.png", "<lora:style:0.5>a red boat", "--model", model, "--lora-dir", style.parent)
    flagged = generated(tmp_path, "flag.png", "a red boat", "--model", model, "--lora", f"{style}:0.5")
    assert np.array_equal(np.asarray(tagged), np.asarray(flagged))
    parameters = parse_parameters(tagged.text["parameters"])
    assert parameters["prompt"] == "<lora:style:0.5>a red boat"  # as AUTOMATIC1111 keeps it
    assert parameters["Lora hashes"] == f"style: {file_hash(style)}"


def test_a_lora_in_the_model_folders_loras_is_found_by_name(model, style, tmp_path):
    """--lora NAME and <lora:NAME> look in the model's own loras/ when no --lora-dir is given
    (the names are checked before the model loads, so the CLI must know where to look)."""
    import shutil

    shutil.copytree(style.parent, model / "loras")
    by_name = generated(tmp_path, "name.png", "a red boat", "--model", model, "--lora", "style:0.5")
    tagged = generated(tmp_path, "tag.png", "<lora:style:0.5>a red boat", "--model", model)
    by_path = generated(tmp_path, "path.png", "a red boat", "--model", model, "--lora", f"{style}:0.5")
    assert np.array_equal(np.asarray(by_name), np.asarray(by_path)) and np.array_equal(np.asarray(tagged), np.asarray(by_path))


def test_repeated_flags_and_weight_zero(model, style, tmp_path):
    base = generated(tmp_path, "base.png", "a red boat", "--model", model)
    zero = generated(tmp_path, "zero.png", "a red boat", "--model", model, "--lora", f"{style}:0", "--lora", "style:0", "--lora-dir", style.parent)
    assert np.array_equal(np.asarray(base), np.asarray(zero))


def test_inpaint_takes_loras(model, style, tmp_path, photo, square_mask):
    photo.save(tmp_path / "photo.png")
    square_mask.save(tmp_path / "mask.png")
    args = ["a red boat", "--model", str(model), "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), *QUICK]
    assert inpaint.main([*args, "--out", str(tmp_path / "base.png")]) == 0
    assert inpaint.main([*args, "--lora", str(style), "--out", str(tmp_path / "lora.png")]) == 0
    image = Image.open(tmp_path / "lora.png")
    assert not np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / "base.png")))
    assert "Lora hashes: " in image.text["parameters"]


def run_cli(*args, real=False):
    """ldm-generate in a fresh interpreter (real) or as main() in this process: exit status, stderr."""
    if real:
        process = subprocess.run([sys.executable, "-m", "ldm.cli.generate", *map(str, args)], capture_output=True, text=True)
    else:
        process = run_in_process("ldm-generate", generate.main, *args)
    return process.returncode, process.stderr


def test_bad_loras_are_one_line_exit_2_and_no_file(model, tiny_unet_components, tmp_path):
    weights = random_lora(tiny_unet_components)
    name = next(iter(weights))
    a, b = weights[name]
    wide = write_lora({name: (torch.zeros(RANK, a.shape[1] + 1), b)}, tmp_path / "wide.safetensors", "kohya")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(wide.read_bytes()[:100])
    dit = save_model(build_tiny(denoiser="dit"), tmp_path / "dit")
    cases = [
        (["--lora", wide], "model's weight is"),
        (["--lora", truncated], "truncated.safetensors"),
        (["--lora", tmp_path / "nowhere.safetensors"], "not found"),
        (["--lora", f"{wide}:nan"], "must be a finite number"),
        (["<lora:wide:1>", "--lora-dir", tmp_path / "empty"], "LoRA 'wide' not found in"),
        (["--lora", wide, "--model", dit], "LoRAs apply to U-Net and MMDiT models; this model's denoiser is a DiT"),
    ]
    for i, (args, message) in enumerate(cases):  # the first through the real command, after its torch import
        model_args = [] if "--model" in args else ["--model", model]
        prompt = [args.pop(0)] if str(args[0]).startswith("<") else []
        status, stderr = run_cli(" ".join(["a boat", *prompt]), *model_args, *args, "--steps", "1", "--out", tmp_path / "out.png",
                                 real=i == 0)  # fmt: skip
        lines = stderr.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("ldm-generate: error: ") and message in lines[0], stderr
        assert not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("target", ["merged", "merged.safetensors"])
def test_convert_merges_a_lora_as_applied(model, style, tmp_path, target):
    assert convert.main([str(model), str(tmp_path / target), "--lora", f"{style}:0.7"]) == 0
    merged = load_model(tmp_path / target).denoiser.state_dict()
    applied = load_model(model)
    apply_loras(applied, [(style, 0.7)])
    expected = applied.denoiser.state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[key], expected[key]) for key in expected)
    assert not torch.equal(expected[next(k for k in expected if "to_q" in k)], load_model(model).denoiser.state_dict()[next(k for k in expected if "to_q" in k)])


def test_convert_refuses_a_lora_that_does_not_fit_and_writes_nothing(model, tmp_path, capsys):
    other = write_lora(random_lora(build_tiny(**{"unet__block_out_channels": [8, 16]})), tmp_path / "other.safetensors", "peft")
    with pytest.raises(SystemExit) as exit:
        convert.main([str(model), str(tmp_path / "merged"), "--lora", str(other)])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "model's weight is" in lines[0]
    assert not (tmp_path / "merged").exists()


def test_convert_merges_a_text_encoder_lora_into_a_copied_diffusers_folder(tmp_path):
    """A diffusers SRC is copied with its U-Net and the text encoder the LoRA changed written anew."""
    from sd_folder import write_tiny_sd_folder

    source = write_tiny_sd_folder(build_tiny(text_encoder__width=64, text_encoder__heads=1, unet__cross_attention_dim=64), tmp_path, text_heads=1)
    stem = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    lora = tmp_path / "te.safetensors"
    save_file({f"{stem}.lora_down.weight": torch.ones(RANK, 64), f"{stem}.lora_up.weight": torch.ones(64, RANK)}, str(lora))
    assert convert.main([str(source), str(tmp_path / "merged"), "--lora", f"{lora}:0.3"]) == 0
    expected = load_model(source)
    apply_loras(expected, [(lora, 0.3)])
    merged = load_model(tmp_path / "merged")

    def same_text_encoder(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.first_text_encoder.state_dict().values(), b.first_text_encoder.state_dict().values()))

    assert same_text_encoder(merged, expected) and not same_text_encoder(merged, load_model(source))
