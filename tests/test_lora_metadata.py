"""LoRA files written by diffusers' save_lora_weights keep alpha (and per-module alphas, rsLoRA)
in their header's adapter metadata: read as diffusers reads them, compared with its
load_lora_weights on the same file."""

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from reference import diffusers_pipeline
from safetensors.torch import load_file, save_file

from ldm.lora.apply import LoraError, apply_loras, read_lora
from ldm.pipeline import Pipeline, SampleRequest, make_generators

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def diffusers_lora_file(components, folder, **config) -> str:
    """A LoRA trained nowhere but written as diffusers' training scripts write one."""
    unet = copy.deepcopy(components.denoiser)
    torch.manual_seed(4)
    unet.add_adapter(LoraConfig(r=4, target_modules=TARGETS, init_lora_weights=False, **config))
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(), weight_name="style.safetensors",
    )  # fmt: skip
    return str(folder / "style.safetensors")


def sampled(pipe_or_components, inputs):
    context, uncond, noise = inputs
    pipe = Pipeline(pipe_or_components)
    return pipe.sample(SampleRequest(context, uncond, noise, 4, 5.0, "ddim", make_generators([1]), progress=False))


@pytest.mark.parametrize(
    "config",
    [
        {"lora_alpha": 8},
        {"lora_alpha": 8, "alpha_pattern": {"attn2.to_k": 32, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 1}},
        {"lora_alpha": 8, "use_rslora": True},
    ],
    ids=["alpha", "alpha-pattern", "rslora"],
)
def test_alpha_in_the_metadata_draws_as_diffusers_draws(tiny_unet_components, tmp_path, config):
    path = diffusers_lora_file(tiny_unet_components, tmp_path, **config)
    assert not any(key.endswith(".alpha") for key in load_file(path))  # alpha is in the header only
    reference = copy.deepcopy(tiny_unet_components)
    pipe = Pipeline(tiny_unet_components)
    inputs = (pipe.encode_text(["a red boat"]), pipe.encode_text([""]), torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(2)))

    apply_loras(tiny_unet_components, [(path, 0.8)])
    ours = sampled(tiny_unet_components, inputs)

    theirs_pipe = diffusers_pipeline(StableDiffusionPipeline, reference, "ddim")
    theirs_pipe.load_lora_weights(path, adapter_name="style")
    theirs_pipe.set_adapters(["style"], [0.8])
    context, uncond, noise = inputs
    theirs = theirs_pipe(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, latents=noise.clone(), num_inference_steps=4,
        guidance_scale=5.0, generator=make_generators([1]), height=32, width=32, output_type="latent",
    ).images  # fmt: skip
    assert (ours - theirs).abs().max().item() < 1e-4


def test_merged_weights_scale_by_the_metadata_alpha(tiny_unet_components, tmp_path):
    """alpha 8, rank 4: twice the delta of the same tensors without the header."""
    path = diffusers_lora_file(tiny_unet_components, tmp_path, lora_alpha=8)
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(path), str(bare))  # the same tensors, no header: alpha = rank
    with_header, without = read_lora(path, tiny_unet_components), read_lora(bare, tiny_unet_components)
    assert {d.alpha for d in with_header.deltas} == {8.0} and {d.alpha for d in without.deltas} == {4.0}
    shape = dict(tiny_unet_components.denoiser.named_modules())[with_header.deltas[0].module].weight.shape
    assert torch.allclose(with_header.deltas[0].delta(shape), 2 * without.deltas[0].delta(shape))


@pytest.mark.parametrize(
    "header, message",
    [
        ("{not json", "lora_adapter_metadata header is not JSON"),
        ('{"unet.lora_alpha": "eight"}', "is 'eight', not a finite number"),
        ('{"unet.lora_alpha": NaN}', "is nan, not a finite number"),
    ],
)
def test_unreadable_adapter_metadata_is_a_one_line_error_naming_the_file(tiny_unet_components, tmp_path, header, message):
    path = diffusers_lora_file(tiny_unet_components, tmp_path, lora_alpha=8)
    broken = tmp_path / "broken.safetensors"
    save_file(load_file(path), str(broken), metadata={"lora_adapter_metadata": header})
    with pytest.raises(LoraError, match=f"broken.safetensors: .*{message}") as error:
        read_lora(broken, tiny_unet_components)
    assert "\n" not in str(error.value)
