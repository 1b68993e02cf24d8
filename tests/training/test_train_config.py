from pathlib import Path

import pytest

from ldm.config import ConfigError
from ldm.training.config import TrainConfig, load_train_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))
# Configs named for the model they build rather than their stage (`ldm-train --config sd3-medium.yaml`).
NAMED_FOR_A_MODEL = {"sd3-medium.yaml": "text2img", "sdxl.yaml": "text2img"}


def test_shipped_configs_are_found():
    names = {str(p.relative_to(p.parents[1] if p.parent.name == "cpu" else p.parent)) for p in CONFIGS}
    assert {"text2img.yaml", "autoencoder.yaml", "clip.yaml", "cpu/text2img.yaml", "cpu/autoencoder.yaml", "cpu/clip.yaml", "cpu/inpaint.yaml"} <= names



@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p.parent.name != "cpu" else f"cpu/{p.name}")
def test_every_shipped_config_parses(path):
    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    assert config.stage in path.name or NAMED_FOR_A_MODEL.get(path.name) == config.stage


def test_sd_scale_config_matches_stable_diffusion_2():
    config = load_train_config(Path(__file__).parents[2] / "configs" / "text2img.yaml")
    assert config.model.vae.block_out_channels == [128, 256, 512, 512]
    assert config.model.vae.scaling_factor == 0.18215
    assert config.model.denoiser.kind == "unet"
    assert config.model.denoiser.block_out_channels == [320, 640, 1280, 1280]
    assert config.model.denoiser.sample_size * config.model.vae.downsample_factor == config.data.resolution == 512
    assert config.model.text_encoder.layer == "penultimate"
    assert config.data.source == "webdataset"


def test_unknown_key_is_named(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("stage: text2img\ntrain:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match=r"train\.max_step.*max_steps"):
        load_train_config(file)


def test_overrides_and_bad_values(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("stage: clip\n")
    assert load_train_config(file, ["train.lr=0.5", "train.batch_size=3"]).train.batch_size == 3
    with pytest.raises(ConfigError, match="stage"):
        load_train_config(file, ["stage=inpaint-later"])
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_train_config(file, ["train.lr_schedule=wiggly"])
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_train_config(file, ["train.max_steps=0"])


def test_dit_scale_config_matches_pixart_alpha():
    import torch

    from ldm.models.components import build_denoiser
    from ldm.models.text_encoder import resolve_arch

    config = load_train_config(Path(__file__).parents[2] / "configs" / "text2img-dit.yaml")
    assert config.model.denoiser.kind == "dit"
    text = resolve_arch(config.model.text_encoder)
    with torch.device("meta"):
        dit = build_denoiser(config.model, text.width)
    assert type(dit).__name__ == "PixArtTransformer2DModel"
    assert len(dit.transformer_blocks) == 28 and dit.inner_dim == 1152 == 16 * 72
    assert dit.config.patch_size == 2 and dit.config.out_channels == 4  # learned sigma off
    assert dit.caption_projection.linear_1.in_features == text.width == 1024  # T5-less: CLIP's width
    assert dit.config.sample_size * config.model.vae.downsample_factor == config.data.resolution == 512


@pytest.mark.parametrize("name", ["cpu/text2img.yaml", "cpu/text2img-dit.yaml"])
def test_a_training_config_in_the_old_form_loads_the_same_model(tmp_path, name):
    """Users' configs written before the tagged section: `denoiser: dit` (or none) beside a
    `unet:` or `dit:` section; dotted overrides in the old form too."""
    import yaml

    path = Path(__file__).parents[2] / "configs" / name
    document = yaml.safe_load(path.read_text())
    section = document["model"].pop("denoiser")
    kind = section.pop("kind")
    document["model"] |= {"denoiser": kind, kind: section} if kind == "dit" else {kind: section}
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(document))
    assert load_train_config(old).model == load_train_config(path).model
    overrides = [f"model.{kind}.sample_size=8"]
    assert load_train_config(old, overrides).model == load_train_config(path, ["model.denoiser.sample_size=8"]).model
    assert load_train_config(path, overrides).model.denoiser.sample_size == 8
