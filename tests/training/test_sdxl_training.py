"""SDXL-shaped models in training: a `model.sdxl` section builds them; the text2img stage
trains one (resumed exactly, exported as an SDXL folder that ldm-generate draws with) or
fine-tunes an SDXL folder or single file; each sample's original size and crop reach the
U-Net's time ids as diffusers' SDXL pipeline builds them; caption dropout falls back to the
empty prompt's embeddings, pooled one included; configs/sdxl.yaml is SDXL base's size."""

import copy
from pathlib import Path

import pytest
import torch
from configs import tiny_train_dict
from tiny_data import TinyImages, tiny_datasets

from ldm.bundled_configs import resolve_config_path
from ldm.config import ConfigError, from_dict
from ldm.formats.model_folder import load_model
from ldm.training.batches import Randomness
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig, load_train_config
from ldm.training.loop import train
from ldm.training.size_conditioning import training_time_ids
from ldm.training.stage_registry import build_stage
from ldm.training.stages import StageContext

TINY_SDXL = {
    "name": "tiny-sdxl",
    "vae": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 32, "scaling_factor": 0.13025},
    "sdxl": {
        "text_encoder": {"width": 32, "heads": 2, "layers": 2, "mlp_width": 64},
        "text_encoder_2": {"width": 48, "heads": 2, "layers": 2, "mlp_width": 64, "activation": "gelu", "projection_dim": 24},
        "time_embed_dim": 8,
    },
    "denoiser": {
        "kind": "unet", "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": [2, 4],
        "transformer_layers_per_block": [1, 2], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": True, "norm_num_groups": 4, "sample_size": 16,
    },  # fmt: skip
}


class SizedImages(TinyImages):
    """Tiny images whose source was bigger and cropped: the keys aspect-ratio buckets add."""

    def __getitem__(self, item):
        sample = super().__getitem__(item)
        index = int(sample["key"])
        return {**sample, "original_size": torch.tensor([64 + index, 48]), "crop_top_left": torch.tensor([index, 3])}


def sized_datasets(split: str):
    return SizedImages(4) if split == "train" else TinyImages(2, offset=1000)


def sdxl_config(output_dir, section: dict | None = None, model: dict | None = None, **train) -> TrainConfig:
    data = tiny_train_dict("text2img", output_dir, **train)
    data["model"] = copy.deepcopy(model or TINY_SDXL)
    data["text2img"] = section or {}
    return from_dict(TrainConfig, data)


def stage_of(config, datasets=None):
    torch.manual_seed(0)
    return build_stage(StageContext(config, torch.device("cpu"), Path(config.train.output_dir), datasets or tiny_datasets()))


def captured_time_ids(stage, batch) -> torch.Tensor:
    """The time ids the U-Net is called with in one training forward of `batch`."""
    seen = []
    hook = stage.components.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"]), with_kwargs=True
    )
    try:
        stage.module(batch, Randomness(0, 0, 0), 0)
    finally:
        hook.remove()
    return seen[0]


def test_a_model_sdxl_section_builds_what_an_sdxl_folder_loads(tmp_path):
    stage = stage_of(sdxl_config(tmp_path / "run"))
    components = stage.components
    first, second = (encoder.model for encoder in components.text_encoders)
    assert type(first).__name__ == "CLIPTextModel" and type(second).__name__ == "CLIPTextModelWithProjection"
    assert [encoder.layer for encoder in components.text_encoders] == ["penultimate"] * 2
    unet = components.denoiser.config
    assert (unet.addition_embed_type, unet.addition_time_embed_dim) == ("text_time", 8)
    assert unet.cross_attention_dim == 32 + 48 and unet.projection_class_embeddings_input_dim == 6 * 8 + 24
    assert components.conditioner.zeros_for_empty_negative
    cond = components.conditioner(["a red circle"])
    assert cond.tokens.shape == (1, 77, 80) and cond.pooled.shape == (1, 24)


def test_sdxl_config_mistakes_are_one_line(tmp_path):
    broken = copy.deepcopy(TINY_SDXL)
    broken["sdxl"]["text_encoder_2"]["projection_dim"] = None
    with pytest.raises(ConfigError, match="projection_dim must be set"):
        sdxl_config(tmp_path, model=broken)
    with pytest.raises(ConfigError, match="two CLIP text models"):
        sdxl_config(tmp_path, section={"text_encoder_from": str(tmp_path)})


def test_time_ids_are_those_diffusers_sdxl_pipeline_builds(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from sdxl_folder import PROJECTION, tiny_sdxl_parts

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_parts(tmp_path))
    batch = {"caption": ["a", "b"], "original_size": torch.tensor([[1024, 768], [300, 200]]), "crop_top_left": torch.tensor([[16, 0], [0, 40]])}
    ours = training_time_ids(batch, (512, 384))
    for row, (original, crop) in enumerate(zip(batch["original_size"].tolist(), batch["crop_top_left"].tolist())):
        theirs = pipe._get_add_time_ids(tuple(original), tuple(crop), (512, 384), dtype=torch.float32, text_encoder_projection_dim=PROJECTION)
        assert torch.equal(ours[row : row + 1], theirs)
    defaults = pipe._get_add_time_ids((512, 384), (0, 0), (512, 384), dtype=torch.float32, text_encoder_projection_dim=PROJECTION)
    assert torch.equal(training_time_ids({"caption": ["a", "b"]}, (512, 384)), defaults.expand(2, -1))


def test_the_batch_sizes_and_crops_reach_the_unet(tmp_path):
    stage = stage_of(sdxl_config(tmp_path / "run"))
    pixels = torch.zeros(2, 3, 32, 32)
    given = {"pixels": pixels, "caption": ["red", "blue"], "original_size": torch.tensor([[600, 400], [32, 90]]), "crop_top_left": torch.tensor([[5, 7], [0, 11]])}
    ids = captured_time_ids(stage, given)
    assert ids.tolist() == [[600, 400, 5, 7, 32, 32], [32, 90, 0, 11, 32, 32]]
    assert captured_time_ids(stage, {"pixels": pixels, "caption": ["red", "blue"]}).tolist() == [[32, 32, 0, 0, 32, 32]] * 2


def test_caption_dropout_conditions_on_the_empty_prompt_pooled_included(tmp_path):
    config = sdxl_config(tmp_path / "run")
    config.data.caption_dropout = 1.0
    module = stage_of(config).module
    dropped = module.context(["red over blue", "green"], Randomness(0, 0, 0))
    with torch.no_grad():
        empty = module.conditioner(["", ""])
    assert torch.equal(dropped.tokens, empty.tokens) and torch.equal(dropped.pooled, empty.pooled)
    assert dropped.pooled.abs().sum() > 0  # the encoding of "", not zeros (those are for sampling's negatives)


def test_the_text_embedding_memory_keeps_both_encoders_outputs(tmp_path):
    stage = stage_of(sdxl_config(tmp_path / "run", section={"text_embedding_memory_mb": 1}))
    memory = stage.module.text_memory
    first = memory(["red", "blue"], "cpu")
    again = memory(["blue", "red"], "cpu")
    with torch.no_grad():
        direct = stage.components.conditioner(["blue", "red"])
    assert memory.hits == 2  # each caption was encoded alone: the same up to a batched matmul's rounding
    assert torch.allclose(again.tokens, direct.tokens, atol=1e-5) and torch.allclose(again.pooled, direct.pooled, atol=1e-5)
    assert first.pooled.shape == (2, 24)


def run(output_dir, resume=None, **settings):
    config = sdxl_config(output_dir, max_steps=5, save_every=3, ema_decay=0.9, **settings)
    return train(config, resume=resume, open_dataset=sized_datasets)


def test_trained_resumed_exported_and_drawn_with(tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel
    from PIL import Image

    from ldm.cli.generate import main
    from ldm.training.text2img_stage import Text2ImgModule

    whole = run(tmp_path / "whole")
    forward = Text2ImgModule.forward

    def dies(self, batch, randomness, step):
        if step == 4:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split")
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    second = run(tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert second.losses == pytest.approx(whole.losses[3:], abs=1e-6)
    a, b = (UNet2DConditionModel.from_pretrained(tmp_path / run_name / "model" / "unet") for run_name in ("whole", "split"))
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))

    model = tmp_path / "whole" / "model"
    assert (model / "model_index.json").is_file() and (model / "text_encoder_2").is_dir()  # an SDXL diffusers folder
    loaded = load_model(model)
    assert torch.equal(loaded.denoiser.state_dict()["conv_in.weight"], a.state_dict()["conv_in.weight"])
    out = tmp_path / "drawn.png"
    assert main(["red over blue", "--model", str(model), "--steps", "2", "--width", "32", "--height", "48", "--out", str(out), "--quiet"]) == 0
    assert Image.open(out).size == (32, 48)


@pytest.mark.parametrize("form", ["folder", "single file"])
def test_init_from_fine_tunes_an_sdxl_folder_or_single_file(tmp_path, form):
    from sdxl_folder import SDXL_SHAPED, write_tiny_sdxl_folder

    from ldm.formats.single_file import save_single_file

    if form == "folder":
        folder = source = write_tiny_sdxl_folder(tmp_path)
    else:  # the shapes a single file does not tell are SDXL's own (32 norm groups, 64-wide heads)
        folder = write_tiny_sdxl_folder(tmp_path, SDXL_SHAPED)
        source = save_single_file(load_model(folder), tmp_path / "sdxl.safetensors")
    config = sdxl_config(tmp_path / "run", section={"init_from": str(source)}, max_steps=2, save_every=2)
    result = train(config, open_dataset=sized_datasets)
    assert len(result.losses) == 2 and all(loss == loss for loss in result.losses)
    exported = tmp_path / "run" / ("model" if form == "folder" else "model.safetensors")  # the source's form
    tuned = load_model(exported)
    original = load_model(folder)
    assert len(tuned.text_encoders) == 2
    assert not torch.equal(tuned.denoiser.state_dict()["conv_in.weight"], original.denoiser.state_dict()["conv_in.weight"])


def meta_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sdxl_yaml_is_sdxl_base_sized():
    from ldm.models.components import build_components

    model = load_train_config(resolve_config_path("sdxl.yaml")).model
    with torch.device("meta"):
        components = build_components(model)
    parts = {name: meta_parameters(module) for name, module in components.modules().items()}
    assert parts["denoiser"] == 2_567_463_684
    assert (parts["text_encoder"], parts["text_encoder_2"]) == (123_060_480, 694_659_840)
    assert components.vae.config.scaling_factor == 0.13025


def test_the_dry_run_lists_both_text_encoders():
    from ldm.training.dry_run import dry_run_report

    report = dry_run_report(load_train_config(resolve_config_path("cpu/text2img-sdxl.yaml")))
    lines = [line.split() for line in report.splitlines() if line.strip().startswith(("text_encoder", "unet"))]
    names = [line[0] for line in lines]
    assert names[:3] == ["unet", "text_encoder", "text_encoder_2"] or names == ["unet", "text_encoder", "text_encoder_2"]


def test_validation_draws_from_a_fresh_sdxl_shaped_model(tmp_path):
    config = sdxl_config(tmp_path / "run")
    config.validation.prompts, config.validation.steps = ["red over blue"], 2
    stage_of(config).evaluate(0)
    assert (tmp_path / "run" / "samples" / "step-000000.png").is_file()


def test_the_latent_cache_keeps_each_samples_size_and_crop(tmp_path):
    """What the stage asks the cache to keep beside the latents (the cache stores and returns
    such extras per sample, as it does the ControlNet stage's maps)."""
    stage = stage_of(sdxl_config(tmp_path / "run", section={"latent_cache": True}))
    batch = {"pixels": torch.zeros(2, 3, 32, 32), "captions": [["a"], ["b"]], "original_size": torch.tensor([[64, 48], [70, 30]]), "crop_top_left": torch.tensor([[1, 3], [0, 2]])}
    kept = stage.cache_extras().compute(batch)
    assert kept.keys() == {"original_size", "crop_top_left"} and torch.equal(kept["crop_top_left"], batch["crop_top_left"])
    assert stage.cache_extras().compute({"pixels": batch["pixels"], "captions": batch["captions"]}) == {}  # data without them
