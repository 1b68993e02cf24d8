"""The lora stage's kohya files for SDXL use sd-scripts' names: the U-Net's original blocks
(lora_unet_input_blocks_*, lora_unet_middle_block_*, lora_unet_output_blocks_*) and
lora_te1_/lora_te2_ for both text encoders. diffusers' load_lora_weights and our loader read
such a file as the trained adapters draw; SD 1/2 files keep their names (test_lora_stage.py)."""

from pathlib import Path

import pytest
import torch
from configs import tiny_train_dict
from reference import LastLatents
from sdxl_folder import write_tiny_sdxl_folder
from test_sdxl_training import sized_datasets

from ldm.config import from_dict
from ldm.diffusion.samplers import make_sampler
from ldm.formats.model_folder import read_safetensors
from ldm.pipeline import Pipeline, make_generators
from ldm.training.config import TrainConfig
from ldm.training.stage_registry import build_stage
from ldm.training.stages import StageContext

DRAW = dict(steps=3, cfg=5.0, sampler="euler", width=32, height=32, seed=4, prompt_syntax="plain", progress=False)
PROMPT = "a lake at dawn"


def trained_stage(folder, output_dir: Path, layout: str):
    """The lora stage with adapters on the U-Net and both text encoders, their up matrices set
    as training would leave them (random, seeded)."""
    from peft.tuners.lora import LoraLayer

    data = tiny_train_dict("lora", output_dir)
    data["lora"] = {"init_from": str(folder), "text_encoder": True, "layout": layout, "dtype": "fp32", "alpha": 2.0}
    config = from_dict(TrainConfig, data)
    torch.manual_seed(0)
    stage = build_stage(StageContext(config, torch.device("cpu"), output_dir, sized_datasets))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in stage.components.modules().values():
            for layer in module.modules():
                if isinstance(layer, LoraLayer):
                    weight = layer.lora_B["default"].weight
                    weight.copy_(torch.randn(weight.shape, generator=generator) * 0.2)
    return stage


def latents(pipe, loras=()) -> torch.Tensor:
    last = LastLatents()
    pipe.generate(PROMPT, loras=tuple((str(path), 1.0) for path in loras), callback=last, **DRAW)
    return last.latents


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl-lora-export"))


def test_kohya_sdxl_export_uses_the_original_names_and_draws_as_trained(folder, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    stage = trained_stage(folder, tmp_path / "run", "kohya")
    path = stage.export()
    keys = {key.split(".")[0] for key in read_safetensors(path)}
    unet = {key for key in keys if key.startswith("lora_unet_")}
    assert unet and all(key.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")) for key in unet)
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k" in unet
    text = keys - unet
    assert {key[:9] for key in text} == {"lora_te1_", "lora_te2_"}
    counts = [len([k for k in text if k.startswith(prefix)]) for prefix in ("lora_te1_", "lora_te2_")]
    assert counts == [18, 19] and "lora_te2_text_projection" in text  # 3 layers x (q, k, v, out, fc1, fc2); bigG's pooled projection

    trained = latents(Pipeline(stage.components.to(dtype=torch.float32)))
    pipe = Pipeline.load(folder)
    base, ours = latents(pipe), latents(pipe, [path])
    assert (trained - base).abs().max().item() > 1e-2  # the adapters do something
    assert (ours - trained).abs().max().item() < 1e-4

    theirs = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    theirs.scheduler = make_sampler(DRAW["sampler"], pipe.components.scheduler_config).scheduler
    theirs.set_progress_bar_config(disable=True)
    theirs.load_lora_weights(str(path))
    drawn = theirs(
        prompt=[PROMPT], num_inference_steps=DRAW["steps"], guidance_scale=DRAW["cfg"], generator=make_generators([DRAW["seed"]]),
        width=DRAW["width"], height=DRAW["height"], output_type="latent",
    ).images  # fmt: skip
    assert (drawn - trained).abs().max().item() < 1e-4


def test_peft_sdxl_export_names_the_second_encoder(folder, tmp_path):
    stage = trained_stage(folder, tmp_path / "run", "peft")
    prefixes = {key.split(".")[0] for key in read_safetensors(stage.export())}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
