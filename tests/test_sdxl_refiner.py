"""An SDXL refiner: ours against diffusers' base pipeline with denoising_end, then its img2img
pipeline with the refiner's components and denoising_start on those latents, on tiny random folders."""

import pytest
import torch
from PIL import Image
from reference import LastLatents
from sdxl_folder import write_tiny_refiner_folder, write_tiny_sdxl_folder

from ldm.cli.generate import main
from ldm.diffusion.samplers import make_sampler
from ldm.formats.model_folder import load_refiner
from ldm.models.weights import ModelError
from ldm.pipeline import Pipeline, make_generators

STEPS = 5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner")
    return write_tiny_sdxl_folder(root), write_tiny_refiner_folder(root)


def diffusers_pipeline(pipeline_class, folder, pipe, sampler):
    ref = pipeline_class.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    ref.scheduler = make_sampler(sampler, pipe.components.scheduler_config).scheduler
    ref.set_progress_bar_config(disable=True)
    return ref


def test_a_refiner_loads_with_its_one_text_encoder(folders):
    _, refiner = folders
    components = load_refiner(refiner)
    cond = components.conditioner(["a lake"], "cpu")
    assert cond.tokens.shape == (1, 77, 48) and cond.pooled.shape == (1, 24)
    assert not components.conditioner.zeros_for_empty_negative


@pytest.mark.parametrize(("sampler", "cfg", "negative", "switch"), [
    ("euler", 5.0, "blurry", 0.8),
    ("ddim", 5.0, "", 0.6),
    ("dpm++2m", 4.0, "ugly", 0.8),
    ("euler-a", 4.0, "", 0.7),
    ("heun", 3.0, "dark", 0.8),
])  # fmt: skip
def test_the_hand_off_matches_diffusers(folders, sampler, cfg, negative, switch):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base, refiner = folders
    pipe = Pipeline.load(base)
    last = LastLatents()
    options = dict(steps=STEPS, cfg=cfg, sampler=sampler, width=32, height=48, prompt_syntax="plain", negative=negative)
    pipe.generate("a lake at dawn", n=2, seed=10, callback=last, progress=False, refiner=str(refiner), refiner_switch=switch, **options)
    generators = make_generators([10, 11])
    common = dict(prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None, num_inference_steps=STEPS, guidance_scale=cfg, generator=generators)
    handed = diffusers_pipeline(StableDiffusionXLPipeline, base, pipe, sampler)(
        width=32, height=48, denoising_end=switch, output_type="latent", **common
    ).images  # fmt: skip
    theirs = diffusers_pipeline(StableDiffusionXLImg2ImgPipeline, refiner, pipe, sampler)(
        image=handed, denoising_start=switch, output_type="latent", **common
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, 24, 16)
    assert (last.latents - theirs).abs().max().item() < 1e-4
    assert not torch.allclose(theirs, handed)


def test_the_png_records_the_refiner_as_a1111(folders, tmp_path):
    base, refiner = folders
    out = tmp_path / "lake.png"
    args = ["a lake", "--model", str(base), "--steps", "3", "--seed", "1", "--refiner", str(refiner), "--out", str(out), "--quiet"]
    assert main(args) == 0
    parameters = Image.open(out).text["parameters"]
    assert f"Refiner: {refiner.name}, Refiner switch at: 0.8" in parameters


@pytest.mark.parametrize(("given", "message"), [
    (["--refiner", "REFINER", "--refiner-switch", "1"], "refiner switch must be between 0 and 1"),
    (["--refiner", "REFINER", "--refiner-switch", "0"], "refiner switch must be between 0 and 1"),
    (["--refiner-switch", "0.5"], "needs a refiner"),
    (["--refiner", "BASE"], "is not an SDXL refiner"),
    (["--model", "REFINER"], "give it with --refiner"),
])  # fmt: skip
def test_bad_refiner_input_is_one_line(folders, tmp_path, capsys, given, message):
    base, refiner = folders
    given = [{"BASE": str(base), "REFINER": str(refiner)}.get(arg, arg) for arg in given]
    model = [] if "--model" in given else ["--model", str(base)]
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit) as stop:
        main(["a lake", *model, "--steps", "2", "--out", str(out), *given])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_refiner_as_the_model_is_refused(folders):
    with pytest.raises(ModelError, match="--refiner"):
        Pipeline.load(folders[1])
