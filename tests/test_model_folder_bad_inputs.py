"""Model and component folders that lie about themselves: absurd sizes, YAML that asks for
Python objects, weights of the wrong shapes. Each is refused in one line, before any
large allocation."""

import shutil

import pytest
import yaml

from ldm.formats.model_folder import ModelError, load_component, load_model, save_component
from ldm.training.config import load_train_config


def edit_model_yaml(folder, edit) -> None:
    document = yaml.safe_load((folder / "model.yaml").read_text())
    edit(document["model"])
    (folder / "model.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def vae_folder(tiny_components, tmp_path):
    return save_component(tiny_components.vae, "vae", tiny_components.config.vae, tmp_path / "vae")


def test_absurd_unet_width_is_refused_before_allocating(tiny_model_dir):
    def widen(model):
        model["denoiser"]["block_out_channels"] = [10**6, 10**6]
        model["denoiser"]["norm_num_groups"] = 4

    edit_model_yaml(tiny_model_dir, widen)
    # Materialised, this U-Net would need terabytes; the weights file holds a few hundred kB.
    with pytest.raises(ModelError, match=r"denoiser weights do not fit its config: model.yaml describes [\d.]+e\+1\d weights .* but denoiser.safetensors holds [\d,]+"):
        load_model(tiny_model_dir)


def test_absurd_depth_is_refused_before_allocating(tiny_model_dir):
    def deepen(model):
        model["text_encoder"]["layers"] = 200
        model["text_encoder"]["width"] = 4096
        model["text_encoder"]["heads"] = 32

    edit_model_yaml(tiny_model_dir, deepen)
    with pytest.raises(ModelError, match=r"text_encoder weights do not fit its config: model.yaml describes [\d.]+e\+10 weights"):
        load_model(tiny_model_dir)


def test_a_deeper_config_than_its_weights_is_refused_naming_the_size(tiny_model_dir):
    # 10**4 layers take as long to build on the meta device as they take here to refuse: 30 s.
    edit_model_yaml(tiny_model_dir, lambda model: model["text_encoder"].update(layers=300))
    with pytest.raises(ModelError, match=r"text_encoder weights do not fit its config: .*resblocks.2.* is missing from "
                       r"text_encoder.safetensors \(model.yaml describes [\d.]+e\+0\d weights .* but text_encoder.safetensors holds"):
        load_model(tiny_model_dir)


def test_absurd_component_is_refused_before_allocating(vae_folder):
    document = yaml.safe_load((vae_folder / "component.yaml").read_text())
    document["config"]["block_out_channels"] = [10**5, 10**5]
    (vae_folder / "component.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ModelError, match=r"vae weights do not fit its config: component.yaml describes [\d.]+e\+1\d weights .* but vae.safetensors holds"):
        load_component(vae_folder, "vae")


PYTHON_TAG = "!!python/object/apply:os.system ['echo pwned > {marker}']\n"


def test_python_tag_in_component_yaml_is_refused_in_one_line(vae_folder, tmp_path):
    marker = tmp_path / "pwned"
    (vae_folder / "component.yaml").write_text(PYTHON_TAG.format(marker=marker))
    with pytest.raises(ModelError) as caught:
        load_component(vae_folder, "vae")
    message = str(caught.value)
    assert "\n" not in message
    assert "component.yaml" in message and "!!python/object/apply:os.system" in message
    assert "refused" in message and "not valid YAML" not in message
    assert not marker.exists()


def test_python_tag_in_model_yaml_is_named_not_called_invalid(tiny_model_dir, tmp_path):
    (tiny_model_dir / "model.yaml").write_text("model: " + PYTHON_TAG.format(marker=tmp_path / "pwned"))
    with pytest.raises(ModelError, match=r"model.yaml line 1 has a Python/unsafe YAML tag \(!!python/object/apply:os.system\)"):
        load_model(tiny_model_dir)


def test_python_tag_in_training_config_is_named(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("stage: !!python/name:os.system\n")
    with pytest.raises(ValueError, match=r"train.yaml line 1 has a Python/unsafe YAML tag \(!!python/name:os.system\) that is refused"):
        load_train_config(config, [])


def test_broken_yaml_is_still_called_invalid(vae_folder):
    (vae_folder / "component.yaml").write_text("kind: [vae\n")
    with pytest.raises(ModelError, match="component.yaml is not valid YAML"):
        load_component(vae_folder, "vae")


def test_wrong_shapes_name_the_first_mismatching_tensor(tiny_components, tiny_model_dir, tmp_path):
    # The U-Net of a model with wider blocks, under this model's config: same keys, other shapes.
    from ldm.config import model_config_from_dict
    from ldm.formats.model_folder import save_model
    from ldm.models.components import build_components
    from tiny import tiny_model_dict

    wider_config = model_config_from_dict(tiny_model_dict(unet__block_out_channels=[16, 48]))
    wider = save_model(build_components(wider_config), tmp_path / "wider")
    shutil.copy(wider / "denoiser.safetensors", tiny_model_dir / "denoiser.safetensors")
    with pytest.raises(ModelError) as caught:
        load_model(tiny_model_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert "denoiser weights do not fit its config: " in message
    assert "has shape (48, 16, 3, 3) in denoiser.safetensors, model.yaml expects (32, 16, 3, 3)" in message, message


def test_missing_tensor_is_named(tiny_components, vae_folder):
    from ldm.models.weights import read_safetensors, write_safetensors

    state = read_safetensors(vae_folder / "vae.safetensors")
    del state["decoder.conv_out.bias"]
    write_safetensors(state, vae_folder / "vae.safetensors")
    with pytest.raises(ModelError, match=r"vae weights do not fit its config: decoder.conv_out.bias is missing from vae.safetensors"):
        load_component(vae_folder, "vae")


@pytest.fixture
def backbone() -> str:
    """These cases edit the U-Net section of model.yaml."""
    return "unet"
