import pytest

from ldm.config import ConfigError, DiTConfig, UNetConfig, apply_overrides, model_config_from_dict, to_dict
from tiny import tiny_model_dict


def test_tiny_config_round_trips():
    config = model_config_from_dict(tiny_model_dict())
    assert isinstance(config.denoiser, UNetConfig) and config.denoiser.kind == "unet"
    assert config.denoiser.block_out_channels == [16, 32]
    assert config.vae.scaling_factor == 0.5
    assert model_config_from_dict(to_dict(config)) == config
    written = to_dict(model_config_from_dict(tiny_model_dict(denoiser="dit")))
    assert list(written["denoiser"])[0] == "kind" and written["denoiser"]["kind"] == "dit"
    assert "unet" not in written and "dit" not in written
    assert model_config_from_dict(written).denoiser == DiTConfig(layers=2, heads=4, head_dim=16, sample_size=16)


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_the_old_form_reads_as_the_tagged_section(kind):
    """Configs written before the tagged section (`denoiser: unet` beside both a `unet:` and a
    `dit:` section: saved model folders, users' training configs) read as the same model."""
    old = model_config_from_dict(tiny_model_dict(old_form=True, denoiser=kind))
    assert old == model_config_from_dict(tiny_model_dict(denoiser=kind))
    assert old.denoiser.kind == kind


def test_a_section_without_kind_is_a_unet():
    assert model_config_from_dict({"denoiser": {"sample_size": 8}}).denoiser == UNetConfig(sample_size=8)
    assert model_config_from_dict({}).denoiser == UNetConfig()
    assert model_config_from_dict({"denoiser": "dit"}).denoiser == DiTConfig()


def test_old_form_overrides_reach_the_tagged_section():
    """`model.unet.sample_size=32` (README commands, users' scripts) on a current config."""
    data = apply_overrides(tiny_model_dict(), ["unet.sample_size=32", "dit.layers=3"])
    config = model_config_from_dict(data)
    assert config.denoiser.sample_size == 32 and config.denoiser.kind == "unet"
    data = apply_overrides(tiny_model_dict(), ["denoiser=dit"])  # switching kind: the other section's defaults
    assert model_config_from_dict(data).denoiser == DiTConfig()


@pytest.mark.parametrize(
    "data, message",
    [
        (tiny_model_dict(unet__chanels=3), "unknown config key 'model.denoiser.chanels'"),
        ({"vea": {}}, "unknown config key 'model.vea' \\(did you mean 'vae'\\?\\)"),
        (tiny_model_dict(unet__layers_per_block="two"), "model.denoiser.layers_per_block must be int"),
        (tiny_model_dict(scheduler__beta_schedule="quadratic"), "model.scheduler.beta_schedule is 'quadratic'"),
        (tiny_model_dict(text_encoder__layer="middle"), "model.text_encoder.layer"),
        (tiny_model_dict(unet__in_channels=5), "model.denoiser.in_channels is 5"),
        (tiny_model_dict(denoiser="transformer"), "^model.denoiser.kind is 'transformer'; expected one of unet, dit, mmdit$"),
        ({"denoiser": "unet-ish"}, "^model.denoiser is 'unet-ish'; expected one of unet, dit, mmdit$"),
        ({"denoiser": 3}, "^model.denoiser must be a mapping, got 3$"),
        (tiny_model_dict(denoiser="dit", dit__in_channels=5), "model.denoiser.in_channels is 5"),
        (tiny_model_dict(denoiser="dit", dit__out_channels=8), "model.denoiser.out_channels \\(8\\) must equal"),
        (tiny_model_dict(denoiser="dit", dit__block_out_channels=[8]), "unknown config key 'model.denoiser.block_out_channels'"),
        # The old form's sections are checked under the names they are written with, the
        # unused one too (as before).
        (tiny_model_dict(old_form=True, unet__chanels=3), "unknown config key 'model.unet.chanels'"),
        (tiny_model_dict(old_form=True, dit__heads="two"), "model.dit.heads must be int"),
        (tiny_model_dict(old_form=True, denoiser="transformer"), "^model.denoiser is 'transformer'; expected one of unet, dit, mmdit$"),
    ],
)
def test_bad_keys_and_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        model_config_from_dict(data)


def test_dotted_overrides_parse_yaml_values():
    data = apply_overrides(tiny_model_dict(), ["unet.block_out_channels=[8, 16]", "vae.scaling_factor=0.3"])
    config = model_config_from_dict(data)
    assert config.denoiser.block_out_channels == [8, 16]
    assert config.vae.scaling_factor == 0.3
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides({}, ["unet.layers"])


def test_numbers_in_e_notation_are_floats_where_a_float_is_asked():
    """YAML 1.1 reads `1e-4` (no dot) as a string: `train.lr=1e-4` must still be a number."""
    config = model_config_from_dict(apply_overrides(tiny_model_dict(), ["vae.scaling_factor=2e-1"]))
    assert config.vae.scaling_factor == 0.2
    with pytest.raises(ConfigError, match="model.vae.scaling_factor must be float, got 'e-1'"):
        model_config_from_dict(apply_overrides(tiny_model_dict(), ["vae.scaling_factor=e-1"]))
    with pytest.raises(ConfigError, match="model.denoiser.layers_per_block must be int"):
        model_config_from_dict(apply_overrides(tiny_model_dict(), ["denoiser.layers_per_block=1e3"]))


def test_open_clip_arch_fills_text_settings():
    config = model_config_from_dict(tiny_model_dict(text_encoder={"arch": "ViT-H-14", "layer": "penultimate"}))
    from ldm.models.text_encoder import resolve_arch

    resolved = resolve_arch(config.text_encoder)
    assert (resolved.width, resolved.heads, resolved.layers, resolved.embed_dim) == (1024, 16, 24, 1024)
