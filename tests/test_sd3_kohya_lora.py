"""SD3 LoRAs in kohya's (sd-scripts') layout: `lora_unet_` + the original MMDiT's module names
(fused qkv, adaLN with shift before scale), `lora_te1_`/`lora_te2_`/`lora_te3_` for CLIP-L,
CLIP-G and T5. diffusers has no converter for these, so the reference is built by hand: each
adapter's delta (weight x alpha / rank x up @ down) is added to the ORIGINAL-layout weights of
the model's single file (written by ldm-convert), and diffusers' from_single_file reads the
merged file; we load the folder, apply the kohya file, and must draw the same latents. A kohya
SD3 LoRA on an SD/SDXL model and the reverse: one line, exit 2."""

import pytest
import torch
from reference import LastLatents
from safetensors.torch import load_file, save_file
from sd3_shaped_folder import write_sd3_shaped_folder
from sdxl_folder import write_tiny_sdxl_folder
from sdxl_lora_files import sdxl_lora_for_folder
from test_sdxl_lora import refused

from ldm.cli.convert import main as convert
from ldm.lora.apply import LoraError, apply_loras, read_lora
from ldm.pipeline import Pipeline, make_generators

DRAW = dict(steps=3, cfg=5.0, width=32, height=32, seed=10, prompt_syntax="plain", progress=False)
PROMPT = "a lake at dawn"
RANK = 4
# kohya prefix -> the prefix of the same module's weight in Stability's single file
FILE_PREFIXES = {
    "lora_unet_": "model.diffusion_model.",
    "lora_te1_": "text_encoders.clip_l.transformer.",
    "lora_te2_": "text_encoders.clip_g.transformer.",
    "lora_te3_": "text_encoders.t5xxl.transformer.",
}
MODULES = (  # (kohya prefix, the module's name as sd-scripts walks it); the tiny MMDiT has 2 blocks
    ("lora_unet_", "joint_blocks.0.x_block.attn.qkv"),  # fused: to_q, to_k, to_v
    ("lora_unet_", "joint_blocks.0.context_block.attn.qkv"),  # fused: add_q_proj, add_k_proj, add_v_proj
    ("lora_unet_", "joint_blocks.0.x_block.attn.proj"),
    ("lora_unet_", "joint_blocks.1.x_block.attn.proj"),
    ("lora_unet_", "joint_blocks.0.context_block.mlp.fc1"),
    ("lora_unet_", "joint_blocks.1.x_block.mlp.fc2"),
    ("lora_unet_", "joint_blocks.0.x_block.adaLN_modulation.1"),  # same order in both layouts
    ("lora_unet_", "final_layer.adaLN_modulation.1"),  # halves swapped
    ("lora_unet_", "final_layer.linear"),
    ("lora_unet_", "context_embedder"),
    ("lora_unet_", "x_embedder.proj"),  # a Conv2d (sd-scripts' conv_dim)
    ("lora_te1_", "text_model.encoder.layers.0.self_attn.q_proj"),
    ("lora_te2_", "text_model.encoder.layers.1.mlp.fc1"),
    ("lora_te3_", "encoder.block.0.layer.0.SelfAttention.v"),
)
LAST_CONTEXT_ADALN = ("lora_unet_", "joint_blocks.1.context_block.adaLN_modulation.1")  # context_pre_only: halves swapped


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return write_sd3_shaped_folder(tmp_path_factory.mktemp("sd3-kohya"), t5=True)


@pytest.fixture(scope="module")
def sd3_file(sd3_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("sd3-kohya-file") / "sd3.safetensors"
    assert convert([str(sd3_folder), str(path)]) == 0
    return path


def kohya_sd3_lora(file_state: dict, path, modules=MODULES + (LAST_CONTEXT_ADALN,), seed: int = 0) -> dict:
    """A random kohya SD3 LoRA for `modules`, shaped by the single file's weights; returns
    {file key: (up, down, alpha)} so the reference can merge it."""
    generator = torch.Generator().manual_seed(seed)
    state, adapters = {}, {}
    for prefix, name in modules:
        weight = file_state[f"{FILE_PREFIXES[prefix]}{name}.weight"]
        down = torch.randn(RANK, *weight.shape[1:], generator=generator) * 0.3  # (r, in[, kh, kw])
        up = torch.randn(weight.shape[0], RANK, *([1, 1] if weight.dim() == 4 else []), generator=generator) * 0.3  # (out, r[, 1, 1])
        alpha = torch.tensor(2.0)
        stem = prefix + name.replace(".", "_")
        state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"], state[f"{stem}.alpha"] = down, up, alpha
        adapters[f"{FILE_PREFIXES[prefix]}{name}.weight"] = (up, down, float(alpha))
    save_file(state, str(path))
    return adapters


def merged_file(file_state: dict, adapters: dict, weight: float, path):
    """The single file with every adapter's delta added to its original-layout weight, by hand."""
    merged = dict(file_state)
    for key, (up, down, alpha) in adapters.items():
        delta = up.flatten(1).double() @ down.flatten(1).double() * (weight * alpha / down.shape[0])  # (out, in * kh * kw)
        merged[key] = (file_state[key].double() + delta.reshape(file_state[key].shape)).to(file_state[key].dtype)
    save_file(merged, str(path))
    return path


def diffusers_from_merged(sd3_folder, merged):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_single_file(str(merged), config=str(sd3_folder), local_files_only=True)
    pipe.text_encoder_3.eval()  # from_single_file leaves the T5 it builds in training mode (dropout on)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_latents(pipe):
    return pipe(
        prompt=[PROMPT], num_inference_steps=DRAW["steps"], guidance_scale=DRAW["cfg"], generator=make_generators([DRAW["seed"]]),
        width=DRAW["width"], height=DRAW["height"], output_type="latent",
    ).images  # fmt: skip


def our_latents(pipe, prompt=PROMPT, **options):
    last = LastLatents()
    pipe.generate(prompt, callback=last, **DRAW, **options)
    return last.latents


@pytest.mark.parametrize("weight", [1.0, 0.7])
def test_a_kohya_sd3_lora_draws_as_its_deltas_merged_into_the_original_file(sd3_folder, sd3_file, tmp_path, weight):
    file_state = load_file(str(sd3_file))
    lora = tmp_path / "kohya-sd3.safetensors"
    adapters = kohya_sd3_lora(file_state, lora)
    theirs_pipe = diffusers_from_merged(sd3_folder, merged_file(file_state, adapters, weight, tmp_path / "merged.safetensors"))

    pipe = Pipeline.load(sd3_folder)
    base = our_latents(pipe)
    applied = apply_loras(pipe.components, [(lora, weight)])  # every weight as diffusers reads the merged file
    for part, theirs in (("denoiser", "transformer"), ("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder_2"),
                         ("text_encoder_3", "text_encoder_3")):  # fmt: skip
        ours = pipe.components.modules()[part]
        ours_state, theirs_state = getattr(ours, "model", ours).state_dict(), getattr(theirs_pipe, theirs).state_dict()
        assert all((ours_state[k] - theirs_state[k]).abs().max().item() < 1e-6 for k in theirs_state), part
    assert len(applied.originals) == len(MODULES) + 1 + 2 * 2  # each fused qkv: three modules
    applied.unload()

    ours = our_latents(pipe, loras=((str(lora), weight),))
    theirs = diffusers_latents(theirs_pipe)
    assert (ours - base).abs().max().item() > 1e-2  # the LoRA does something
    assert (ours - theirs).abs().max().item() < 1e-4
    assert torch.equal(our_latents(pipe), base)  # unloaded after the request, exactly
    if weight != 1.0:  # by name, in a prompt tag
        tagged = our_latents(pipe, f"{PROMPT} <lora:kohya-sd3:{weight}>", lora_dir=str(tmp_path))
        assert (tagged - theirs).abs().max().item() < 1e-4


def test_the_fused_qkv_splits_into_three_adapters_sharing_down(sd3_folder, sd3_file, tmp_path):
    lora = tmp_path / "qkv.safetensors"
    kohya_sd3_lora(load_file(str(sd3_file)), lora, modules=MODULES[:1] + (LAST_CONTEXT_ADALN,))
    deltas = read_lora(lora, Pipeline.load(sd3_folder).components).deltas
    names = [delta.module for delta in deltas]
    assert names == [f"transformer_blocks.0.attn.{m}" for m in ("to_q", "to_k", "to_v")] + ["transformer_blocks.1.norm1_context.linear"]
    assert all(delta.down is deltas[0].down for delta in deltas[:3])
    state = load_file(str(lora))
    up = state["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight"]
    assert torch.equal(torch.cat([delta.up for delta in deltas[:3]]), up)
    adaln = state["lora_unet_joint_blocks_1_context_block_adaLN_modulation_1.lora_up.weight"]
    assert torch.equal(deltas[3].up, torch.cat(adaln.chunk(2)[::-1]))  # shift, scale -> scale, shift


def test_a_kohya_sd3_lora_on_a_u_net_model_is_one_line(sd3_file, tiny_unet_components, tmp_path, capsys):
    from ldm.formats.model_folder import save_model

    model = save_model(tiny_unet_components, tmp_path / "sd")
    lora = tmp_path / "kohya-sd3.safetensors"
    kohya_sd3_lora(load_file(str(sd3_file)), lora)
    line = refused(capsys, "a lake", "--model", model, "--lora", lora, "--out", tmp_path / "x.png")
    assert "this LoRA is for SD3 (an MMDiT); this model is an SD 1.x/2.x-shaped model" in line
    assert not (tmp_path / "x.png").exists()


def test_a_kohya_sd3_lora_on_an_sdxl_model_and_the_reverse_are_one_line(sd3_folder, sd3_file, tmp_path, capsys):
    sdxl = write_tiny_sdxl_folder(tmp_path / "sdxl")
    sd3_lora = tmp_path / "kohya-sd3.safetensors"
    kohya_sd3_lora(load_file(str(sd3_file)), sd3_lora)
    line = refused(capsys, "a lake", "--model", sdxl, "--lora", sd3_lora, "--out", tmp_path / "x.png")
    assert "this LoRA is for SD3 (an MMDiT); this model is SDXL" in line
    sdxl_lora = sdxl_lora_for_folder(sdxl, tmp_path / "kohya-sdxl.safetensors", "kohya")
    line = refused(capsys, "a lake", "--model", sd3_folder, "--lora", sdxl_lora, "--out", tmp_path / "x.png")
    assert "this LoRA is for SDXL" in line and line.endswith("this model is SD3 (an MMDiT)")
    assert not (tmp_path / "x.png").exists()


def test_a_t5_adapter_on_an_sd3_model_without_t5_is_one_line(sd3_file, tmp_path):
    from sd3_folder import write_tiny_sd3_folder

    no_t5 = write_tiny_sd3_folder(tmp_path, 3.0)
    lora = tmp_path / "t5.safetensors"
    kohya_sd3_lora(load_file(str(sd3_file)), lora, modules=MODULES[-1:])
    with pytest.raises(LoraError, match="changes text_encoder_3, which this model does not have") as error:
        read_lora(lora, Pipeline.load(no_t5).components)
    assert "\n" not in str(error.value)
