"""LoRA files in both key layouts against diffusers' load_lora_weights; weight 0; unload;
merge; mismatches."""

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline
from lora_files import RANK, random_lora, write_lora
from reference import diffusers_pipeline
from tiny import build_tiny

from ldm.lora.apply import LoraError, apply_loras, file_hash, read_lora
from ldm.pipeline import Pipeline, SampleRequest, make_generators

def latents(pipe, sample=None):
    context, uncond = pipe.encode_text(["a red boat"]), pipe.encode_text([""])
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(2))
    return context, uncond, noise


def our_latents(components):
    pipe = Pipeline(components)
    context, uncond, noise = latents(pipe)
    return pipe.sample(SampleRequest(context, uncond, noise, 4, 5.0, "ddim", make_generators([1]), progress=False))


@pytest.mark.parametrize("layout", ["kohya", "peft"])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_lora_matches_diffusers_load_lora_weights(tiny_unet_components, tmp_path, layout, weight):
    path = write_lora(random_lora(tiny_unet_components), tmp_path / f"style-{layout}.safetensors", layout)
    reference = copy.deepcopy(tiny_unet_components)
    context, uncond, noise = latents(Pipeline(tiny_unet_components))
    base = our_latents(tiny_unet_components)

    applied = apply_loras(tiny_unet_components, [(path, weight)])
    ours = our_latents(tiny_unet_components)

    theirs_pipe = diffusers_pipeline(StableDiffusionPipeline, reference, "ddim")
    theirs_pipe.load_lora_weights(str(path), adapter_name="style")
    theirs_pipe.set_adapters(["style"], [weight])
    theirs = theirs_pipe(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, latents=noise.clone(), num_inference_steps=4,
        guidance_scale=5.0, generator=make_generators([1]), height=32, width=32, output_type="latent",
    ).images
    assert (ours - base).abs().max().item() > 1e-2  # the LoRA does something
    assert (ours - theirs).abs().max().item() < 1e-4

    applied.unload()
    assert torch.equal(our_latents(tiny_unet_components), base)


def test_weight_zero_is_the_base_model_exactly(tiny_unet_components, tmp_path):
    path = write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "kohya")
    base = our_latents(tiny_unet_components)
    apply_loras(tiny_unet_components, [(path, 0.0)])
    assert torch.equal(our_latents(tiny_unet_components), base)


def test_merged_model_generates_as_the_applied_lora(tiny_unet_components, tmp_path):
    from ldm.lora.merge import merge_lora_into_folder
    from ldm.formats.model_folder import load_model, save_model

    folder = save_model(tiny_unet_components, tmp_path / "model")
    path = write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "peft")
    merged = merge_lora_into_folder(folder, [(path, 0.7)], tmp_path / "merged")
    apply_loras(tiny_unet_components, [(path, 0.7)])
    assert torch.equal(our_latents(load_model(merged)), our_latents(tiny_unet_components))


def test_a_lora_for_another_model_is_a_one_line_error_naming_it(tiny_unet_components, tmp_path):
    weights = random_lora(tiny_unet_components)
    name = next(iter(weights))
    a, b = weights[name]
    wrong = write_lora({name: (torch.zeros(RANK, a.shape[1] + 1), b)}, tmp_path / "wide.safetensors", "kohya")
    with pytest.raises(LoraError, match=f"{name}.*model's weight is") as error:
        read_lora(wrong, tiny_unet_components)
    assert "\n" not in str(error.value)
    missing = write_lora({"down_blocks.9.attentions.0.proj_in": (a, b)}, tmp_path / "other.safetensors", "peft")
    with pytest.raises(LoraError, match="down_blocks.9.attentions.0.proj_in' is not in this model's denoiser"):
        read_lora(missing, tiny_unet_components)
    pickle = tmp_path / "style.pt"
    pickle.write_bytes(b"x")
    with pytest.raises(LoraError.__mro__[1], match="pickled"):
        read_lora(pickle, tiny_unet_components)


def test_file_hash_is_a1111s_short_sha256(tmp_path):
    import hashlib

    path = tmp_path / "x.safetensors"
    path.write_bytes(b"lora bytes")
    assert file_hash(path) == hashlib.sha256(b"lora bytes").hexdigest()[:12]


@pytest.fixture
def backbone() -> str:
    """ControlNets, LoRAs in SD's key layout and SD's single files are U-Net things."""
    return "unet"


def test_a_dit_model_refuses_loras_in_one_line(tiny_unet_components, tmp_path):
    path = write_lora(random_lora(tiny_unet_components), tmp_path / "style.safetensors", "kohya")
    with pytest.raises(LoraError, match="LoRAs apply to U-Net and MMDiT models; this model's denoiser is a DiT"):
        apply_loras(build_tiny(denoiser="dit"), [(path, 1.0)])
