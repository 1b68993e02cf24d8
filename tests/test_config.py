import pytest

from ldm.config import ConfigError, apply_overrides, model_config_from_dict
from tiny import tiny_model_dict


def test_tiny_config_round_trips():
    config = model_config_from_dict(tiny_model_dict())
    assert config.unet.block_out_channels == [16, 32]
    assert config.vae.scaling_factor == 0.5


@pytest.mark.parametrize(
    "data, message",
    [
        (tiny_model_dict(unet__chanels=3), "unknown config key 'model.unet.chanels'"),
        ({"vea": {}}, "unknown config key 'model.vea' \\(did you mean 'vae'\\?\\)"),
        (tiny_model_dict(unet__layers_per_block="two"), "model.unet.layers_per_block must be int"),
        (tiny_model_dict(scheduler__beta_schedule="quadratic"), "model.scheduler.beta_schedule is 'quadratic'"),
        (tiny_model_dict(text_encoder__layer="middle"), "model.text_encoder.layer"),
        (tiny_model_dict(unet__in_channels=5), "model.unet.in_channels is 5"),
        (tiny_model_dict(denoiser="transformer"), "^model.denoiser is 'transformer'; expected one of unet, dit$"),
        (tiny_model_dict(denoiser="dit", dit__in_channels=5), "model.dit.in_channels is 5"),
        (tiny_model_dict(denoiser="dit", dit__out_channels=8), "model.dit.out_channels \\(8\\) must equal"),
        (tiny_model_dict(dit__heads="two"), "model.dit.heads must be int"),
    ],
)
def test_bad_keys_and_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        model_config_from_dict(data)


def test_dotted_overrides_parse_yaml_values():
    data = apply_overrides(tiny_model_dict(), ["unet.block_out_channels=[8, 16]", "vae.scaling_factor=0.3"])
    config = model_config_from_dict(data)
    assert config.unet.block_out_channels == [8, 16]
    assert config.vae.scaling_factor == 0.3
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides({}, ["unet.layers"])


def test_numbers_in_e_notation_are_floats_where_a_float_is_asked():
    """YAML 1.1 reads `1e-4` (no dot) as a string: `train.lr=1e-4` must still be a number."""
    config = model_config_from_dict(apply_overrides(tiny_model_dict(), ["vae.scaling_factor=2e-1"]))
    assert config.vae.scaling_factor == 0.2
    with pytest.raises(ConfigError, match="model.vae.scaling_factor must be float, got 'e-1'"):
        model_config_from_dict(apply_overrides(tiny_model_dict(), ["vae.scaling_factor=e-1"]))
    with pytest.raises(ConfigError, match="model.unet.layers_per_block must be int"):
        model_config_from_dict(apply_overrides(tiny_model_dict(), ["unet.layers_per_block=1e3"]))


def test_open_clip_arch_fills_text_settings():
    config = model_config_from_dict(tiny_model_dict(text_encoder={"arch": "ViT-H-14", "layer": "penultimate"}))
    from ldm.models.text_encoder import resolve_arch

    resolved = resolve_arch(config.text_encoder)
    assert (resolved.width, resolved.heads, resolved.layers, resolved.embed_dim) == (1024, 16, 24, 1024)
