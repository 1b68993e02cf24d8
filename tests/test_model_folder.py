"""Model folders: save/load round trip, atomic replace, safetensors only, diffusers SD folders."""

import os

import numpy as np

import pytest
import torch
import yaml

from ldm.formats.model_folder import ModelError, load_component, load_model, save_model
from ldm.pipeline import Pipeline
from sd_folder import write_tiny_sd_folder


def generate(pipe, **kwargs):
    return pipe.generate("a lake at dawn", steps=3, seed=5, sampler="ddim", progress=False, **kwargs)


def test_save_then_load_generates_identical_images(tiny_components, tmp_path):
    before = generate(Pipeline(tiny_components)).images[0]
    folder = save_model(tiny_components, tmp_path / "model")
    assert sorted(os.listdir(folder)) == ["denoiser.safetensors", "model.yaml", "text_encoder.safetensors", "vae.safetensors"]
    after = generate(Pipeline.load(folder)).images[0]
    assert np.array_equal(np.asarray(before), np.asarray(after))


def test_folders_from_before_the_dit_load_their_unet_safetensors(tiny_unet_components, tmp_path):
    folder = save_model(tiny_unet_components, tmp_path / "model")
    (folder / "denoiser.safetensors").rename(folder / "unet.safetensors")
    before = generate(Pipeline(tiny_unet_components)).images[0]
    after = generate(Pipeline.load(folder)).images[0]
    assert np.array_equal(np.asarray(before), np.asarray(after))


def test_the_config_is_written_with_one_denoiser_section_and_read_back(tiny_components, tmp_path, backbone):
    folder = save_model(tiny_components, tmp_path / "model")
    model = yaml.safe_load((folder / "model.yaml").read_text())["model"]
    assert model["denoiser"]["kind"] == backbone and "unet" not in model and "dit" not in model
    assert load_model(folder).config == tiny_components.config


def test_folders_with_the_old_config_form_load_as_the_same_model(tiny_components, tmp_path, backbone):
    """model.yaml as it was written before the tagged section: `denoiser: unet | dit` beside a
    `unet:` and a `dit:` section, both always there."""
    folder = save_model(tiny_components, tmp_path / "model")
    document = yaml.safe_load((folder / "model.yaml").read_text())
    section = dict(document["model"].pop("denoiser"))
    del section["kind"]
    unused = {"unet": {"layers_per_block": 2}, "dit": {"layers": 28}}  # defaults, as they were written
    document["model"] = {**document["model"], "denoiser": backbone, **unused, backbone: section}
    (folder / "model.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    loaded = load_model(folder)
    assert loaded.config == tiny_components.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.denoiser.state_dict().values(), tiny_components.denoiser.state_dict().values()))


def test_loaded_model_keeps_its_config(tiny_model_dir):
    components = load_model(tiny_model_dir)
    assert components.config.vae.scaling_factor == 0.5
    assert components.vae.config.scaling_factor == 0.5
    assert components.name == "tiny"


def test_saving_over_a_model_replaces_it_whole(tiny_components, tmp_path, backbone):
    folder = save_model(tiny_components, tmp_path / "model")
    with torch.no_grad():
        tiny_components.denoiser.proj_out.bias.add_(1.0) if backbone == "dit" else tiny_components.denoiser.conv_out.bias.add_(1.0)
    save_model(tiny_components, folder)
    reloaded = load_model(folder)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.denoiser.state_dict().values(), tiny_components.denoiser.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or backup left


def test_a_crash_while_saving_leaves_the_old_model(tiny_components, tmp_path, monkeypatch):
    folder = save_model(tiny_components, tmp_path / "model")
    import ldm.formats.model_folder as checkpoint

    def crash(state, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_safetensors", crash)
    with pytest.raises(OSError):
        save_model(tiny_components, folder)
    assert load_model(folder).config.name == "tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    pickle_file = tmp_path / "model.ckpt"
    pickle_file.write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="pickle"):
        load_model(pickle_file)
    (tiny_model_dir / "denoiser.safetensors").rename(tiny_model_dir / "denoiser.bin")
    with pytest.raises(ModelError, match="pickled checkpoint; refused because unpickling can run arbitrary code"):
        load_model(tiny_model_dir)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "model folder not found"),
        (lambda p: p, "is not a model folder"),
        (lambda p: (p / "model.yaml").write_text("model: {unet: {chanels: 3}}") and p, "unknown config key 'model.unet.chanels'"),
    ],
)
def test_bad_model_paths_say_why(tmp_path, make, message):
    with pytest.raises(ModelError, match=message):
        load_model(make(tmp_path))


def test_corrupt_weights_are_reported(tiny_model_dir):
    (tiny_model_dir / "vae.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(tiny_model_dir)


def test_diffusers_folder_loads_and_matches_diffusers_pipeline(tiny_unet_components, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = write_tiny_sd_folder(tiny_unet_components, tmp_path)
    pipe = Pipeline.load(folder)
    assert pipe.components.config is None and pipe.components.first_text_encoder.width == 32
    ours = pipe.generate("a red boat", negative="fog", steps=4, cfg=6.0, seed=9, sampler="ddim", progress=False)

    reference = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    theirs = reference(
        "a red boat",
        negative_prompt="fog",
        num_inference_steps=4,
        guidance_scale=6.0,
        generator=[torch.Generator().manual_seed(9)],
        height=32,
        width=32,
        output_type="pil",
    ).images[0]
    difference = torch.from_numpy(np.asarray(ours.images[0], np.int16) - np.asarray(theirs, np.int16))
    assert difference.abs().max() <= 1  # uint8 rounding


def test_saved_folder_is_readable_like_any_new_file(tiny_components, tmp_path):
    umask = os.umask(0o022)
    try:
        folder = save_model(tiny_components, tmp_path / "model")
    finally:
        os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}


def test_diffusers_finetune_export_replaces_the_unet_and_loads(tiny_unet_components, tmp_path):
    from ldm.formats.diffusers_export import save_diffusers_finetune

    source = write_tiny_sd_folder(tiny_unet_components, tmp_path)
    with torch.no_grad():
        tiny_unet_components.denoiser.conv_out.bias.add_(1.0)
    out = save_diffusers_finetune(tiny_unet_components.denoiser, source, tmp_path / "finetuned")
    loaded = load_model(out)
    assert torch.equal(loaded.denoiser.conv_out.bias, tiny_unet_components.denoiser.conv_out.bias)
    assert (out / "tokenizer" / "tokenizer.json").is_file()  # the rest of the source came along
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a diffusers model folder; not replacing it"):
        save_diffusers_finetune(tiny_unet_components.denoiser, source, tmp_path / "not-a-model")
    assert (tmp_path / "not-a-model" / "notes.txt").read_text() == "mine"


def test_a_folder_reads_the_parts_it_shares_from_its_base(tiny_unet_components, tmp_path):
    """tools/export_fp16.py --share-with leaves out the parts equal to the base's (a distilled
    U-Net keeps the VAE and text encoder): the slim folder draws what a full copy draws."""
    from in_process import run_in_process
    from tool_scripts import load_tool

    main = load_tool("export_fp16.py", "export_fp16_for_model_folder_tests").main  # its script run: tests/control

    def tool(*args):
        run = run_in_process("export_fp16.py", main, *args)
        assert run.returncode == 0, run.stderr
        return run

    save_model(tiny_unet_components, tmp_path / "base32")
    tool(tmp_path / "base32", tmp_path / "base")
    with torch.no_grad():
        next(tiny_unet_components.denoiser.parameters()).add_(0.5)  # a different denoiser
    save_model(tiny_unet_components, tmp_path / "student32")
    tool(tmp_path / "student32", tmp_path / "full")
    run = tool(tmp_path / "student32", tmp_path / "slim", "--share-with", tmp_path / "base")
    assert "shared with" in run.stdout and "vae, text_encoder" in run.stdout
    assert sorted(os.listdir(tmp_path / "slim")) == ["denoiser.safetensors", "model.yaml"]
    full, slim = (generate(Pipeline.load(tmp_path / name)).images[0] for name in ("full", "slim"))
    assert np.array_equal(np.asarray(full), np.asarray(slim))
    base = generate(Pipeline.load(tmp_path / "base")).images[0]
    assert not np.array_equal(np.asarray(base), np.asarray(slim))  # the student's own denoiser is used

    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(ModelError, match="parts_from ../base is not a model folder"):
        load_model(tmp_path / "slim")


@pytest.mark.parametrize("kind", ["vae", "text_encoder"])
def test_a_component_is_read_from_a_whole_model_folder(tiny_model_dir, kind):
    """text2img.vae_from / text_encoder_from may name a model folder: its part of that kind."""
    module, config = load_component(tiny_model_dir, kind)
    model = load_model(tiny_model_dir)
    expected = model.modules()[kind]
    assert type(module) is type(expected) and config == getattr(model.config, kind)
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), expected.state_dict().values()))
