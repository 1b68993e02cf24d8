"""Single-file checkpoints in the original Stable Diffusion layout: export, load back,
diffusers' from_single_file on the same file, SD 1.x / 2.x files made from other tools'
layouts, bad files."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from reference import diffusers_pipeline
from sd_folder import write_tiny_sd_folder
from tiny import build_tiny

from ldm.config import to_dict
from ldm.formats.diffusers_conversion import save_as_diffusers
from ldm.formats.model_folder import ModelError, load_model
from ldm.formats.single_file import read_metadata, save_single_file
from ldm.pipeline import Pipeline, SampleRequest, make_generators

# Shaped as real SD checkpoints are, only narrower: 32 norm groups, attention heads as the
# layout facts say (SD 1.x: 8 per block; SD 2.x and the text towers: 64 channels each).
SD_SHAPED = dict(
    vae__block_out_channels=[32, 32],
    vae__norm_num_groups=32,
    vae__scaling_factor=0.18215,
    vae__sample_size=512,
    unet__norm_num_groups=32,
    unet__sample_size=64,
)
SD2_SHAPED = dict(
    SD_SHAPED,
    unet__block_out_channels=[64, 128],
    unet__attention_head_dim=[1, 2],
    unet__use_linear_projection=True,
    unet__cross_attention_dim=64,
    text_encoder__width=64,
    text_encoder__heads=1,
    text_encoder__layer="penultimate",
)
SD1_SHAPED = dict(SD_SHAPED, unet__block_out_channels=[32, 64], unet__cross_attention_dim=64, text_encoder__width=64, text_encoder__heads=1)


def pixels(pipe, **kwargs):
    result = pipe.generate("a lake at dawn", steps=3, seed=5, sampler="ddim", width=32, height=32, progress=False, **kwargs)
    return np.asarray(result.images[0])


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_exported_file_loads_back_with_the_same_pixels(tmp_path, in_channels):
    components = build_tiny(unet__in_channels=in_channels)
    path = save_single_file(components, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert to_dict(loaded.config) == to_dict(components.config)
    for part in ("vae", "denoiser"):
        assert same_weights(getattr(loaded, part), getattr(components, part))
    if in_channels == 4:
        assert np.array_equal(pixels(Pipeline(components)), pixels(Pipeline(loaded)))


def test_exported_file_uses_the_original_key_names(tiny_components, tmp_path):
    from safetensors import safe_open

    path = save_single_file(tiny_components, tmp_path / "tiny.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    for key in (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.output_blocks.1.1.conv.weight",
        "model.diffusion_model.middle_block.2.emb_layers.1.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    ):
        assert key in keys, key
    assert not any(k.startswith(("down_blocks", "up_blocks", "unet.", "vae.")) for k in keys)


def test_diffusers_from_single_file_draws_the_same_images(tiny_components, tmp_path):
    path = save_single_file(tiny_components, tmp_path / "tiny.safetensors")
    config = tmp_path / "config"  # the local config diffusers needs to stay offline
    tiny_components.denoiser.save_config(config / "unet")
    tiny_components.vae.save_config(config / "vae")
    offline = {"config": str(config), "local_files_only": True}
    unet = UNet2DConditionModel.from_single_file(str(path), subfolder="unet", **offline).eval()
    vae = AutoencoderKL.from_single_file(str(path), subfolder="vae", **offline).eval()

    ours = Pipeline(load_model(path))
    context, uncond = ours.encode_text(["a red boat"]), ours.encode_text([""])
    noise = torch.randn(ours.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(3))
    latents = ours.sample(SampleRequest(context, uncond, noise, 4, 5.0, "dpm++2m", make_generators([1]), progress=False))

    theirs = diffusers_pipeline(StableDiffusionPipeline, type(tiny_components)(vae, None, unet, tiny_components.scheduler_config), "dpm++2m")
    their_images = theirs(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, latents=noise.clone(), num_inference_steps=4,
        guidance_scale=5.0, generator=make_generators([1]), height=32, width=32, output_type="pt",
    ).images
    our_images = (ours.decode(latents) / 2 + 0.5).clamp(0, 1)
    assert (our_images - their_images).abs().max().item() < 1e-4


def test_sd2_layout_file_without_our_config_is_read_from_its_shapes(tmp_path):
    source = build_tiny(**SD2_SHAPED)
    path = save_single_file(source, tmp_path / "sd2.safetensors", with_config=False)
    assert "ldm_model" not in read_metadata(path)
    loaded = load_model(path)
    expected = to_dict(source.config) | {"name": "sd2"}
    assert to_dict(loaded.config) == expected
    assert same_weights(loaded.first_text_encoder.tower, source.first_text_encoder.tower)
    assert np.array_equal(pixels(Pipeline(source)), pixels(Pipeline(loaded)))


@pytest.mark.parametrize("in_channels", [4, 9])
def test_sd1_layout_file_matches_the_diffusers_folder_it_was_made_from(tmp_path, in_channels):
    folder = write_tiny_sd_folder(build_tiny(**SD1_SHAPED, unet__in_channels=in_channels), tmp_path, text_heads=1)
    original = load_model(folder)
    path = save_single_file(original, tmp_path / "sd1.safetensors")
    loaded = load_model(path)
    assert loaded.config is None  # a transformers CLIP text model, as in the folder
    for part in ("vae", "denoiser"):
        assert same_weights(getattr(loaded, part), getattr(original, part))
    assert same_weights(loaded.first_text_encoder.model, original.first_text_encoder.model)
    assert loaded.denoiser.config.in_channels == in_channels
    ids = torch.tensor([[512, 40, 41, 42, 513] + [513] * 72])  # within the tiny byte vocabulary
    assert torch.equal(loaded.first_text_encoder(ids).hidden, original.first_text_encoder(ids).hidden)


def test_sd1_file_tokenizes_as_clip(tmp_path):
    folder = write_tiny_sd_folder(build_tiny(**SD1_SHAPED), tmp_path, text_heads=1)
    loaded = load_model(save_single_file(load_model(folder), tmp_path / "sd1.safetensors"))
    ids = loaded.first_text_encoder.tokenize(["a photo of a cat"])
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, -1].item() == 49407  # padded with the end mark, as SD 1.x


def test_pickled_checkpoint_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"not opened")
    with pytest.raises(ModelError, match="pickled checkpoint; refused because unpickling can run arbitrary code"):
        load_model(path)


def test_truncated_and_foreign_files_are_one_line_errors(tiny_components, tmp_path):
    from safetensors.torch import save_file

    path = save_single_file(tiny_components, tmp_path / "tiny.safetensors")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(truncated)
    foreign = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ModelError, match="not a Stable Diffusion checkpoint"):
        load_model(foreign)


def test_saving_over_a_file_leaves_it_whole_on_failure(tiny_components, tmp_path, monkeypatch):
    import safetensors.torch

    path = save_single_file(tiny_components, tmp_path / "tiny.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError):
        save_single_file(tiny_components, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


def test_diffusers_folder_export_draws_the_same_images(tmp_path):
    source = build_tiny(text_encoder__layer="penultimate")
    folder = save_as_diffusers(source, tmp_path / "diffusers")
    loaded = load_model(folder)
    assert loaded.first_text_encoder.tokenize(["a lake"]).tolist() == source.first_text_encoder.tokenize(["a lake"]).tolist()
    ours, theirs = Pipeline(source), Pipeline(loaded)
    assert (ours.encode_text(["a lake at dawn"]).tokens - theirs.encode_text(["a lake at dawn"]).tokens).abs().max() < 1e-5
    assert np.abs(pixels(ours).astype(int) - pixels(theirs).astype(int)).max() <= 1


def test_ldm_convert_writes_a_file_and_refuses_pickles(tiny_model_dir, tmp_path, capsys):
    from ldm.cli.convert import main

    target = tmp_path / "one.safetensors"
    assert main([str(tiny_model_dir), str(target)]) == 0
    assert np.array_equal(pixels(Pipeline.load(target)), pixels(Pipeline.load(tiny_model_dir)))
    capsys.readouterr()
    pickle = tmp_path / "sd.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(SystemExit) as exit:
        main([str(pickle), str(tmp_path / "out.safetensors")])
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pickled checkpoint; refused" in error
    assert not (tmp_path / "out.safetensors").exists()


@pytest.fixture
def backbone() -> str:
    """ControlNets, LoRAs in SD's key layout and SD's single files are U-Net things."""
    return "unet"
