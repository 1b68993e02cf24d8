"""Epsilon or v for single-file SD checkpoints: diffusers' rule for files without a config,
an AUTOMATIC1111-style NAME.yaml sidecar beside the file (also the user's override), bad
sidecars in one line."""

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.loaders import single_file_utils
from test_single_file import SD2_SHAPED
from tiny import build_tiny

from ldm.formats.model_folder import ModelError, load_model
from ldm.formats.original_layout import UNET_PREFIX
from ldm.formats.single_file import save_single_file
from ldm.formats.single_file_prediction import detected_prediction_type

# An SD 2.x 768 (v) file as its shapes show it: OpenCLIP ViT-H's 1024-wide context. A tiny
# vocabulary keeps it small; nothing here tokenizes.
SD2_V_SHAPED = dict(SD2_SHAPED, unet__cross_attention_dim=1024, text_encoder__width=1024, text_encoder__heads=16, text_encoder__mlp_ratio=1.0, text_encoder__vocab_size=64)

# A1111's v2-inference.yaml / v2-inference-v.yaml, cut to what matters here.
LDM_CONFIG = """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
{extra}    unet_config:
      params:
        use_linear_in_transformer: true
"""


def checkpoint(context_width: int, in_channels: int = 4, global_step=None) -> dict[str, torch.Tensor]:
    """The keys and shapes both rules read, as a real SD file holds them."""
    state = {
        UNET_PREFIX + "input_blocks.0.0.weight": torch.zeros(320, in_channels, 3, 3),
        UNET_PREFIX + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, context_width),
    }
    if global_step is not None:
        state["global_step"] = torch.tensor(global_step)
    return state


@pytest.mark.parametrize(
    "state, expected",
    [
        (checkpoint(768), "epsilon"),  # SD 1.x
        (checkpoint(1024), "v_prediction"),  # SD 2.x 768
        (checkpoint(1024, in_channels=9), "epsilon"),  # SD 2 inpainting
        (checkpoint(1024, global_step=875000), "epsilon"),  # SD 2 base
        (checkpoint(1024, global_step=110000), "v_prediction"),
        (checkpoint(768, global_step=875000), "epsilon"),
    ],
    ids=["sd1", "sd2-768", "sd2-inpainting", "sd2-base-step", "sd2-other-step", "sd1-step"],
)
def test_detection_agrees_with_diffusers(state, expected, monkeypatch):
    monkeypatch.setattr(single_file_utils, "SCHEDULER_DEFAULT_CONFIG", dict(single_file_utils.SCHEDULER_DEFAULT_CONFIG))
    theirs = single_file_utils._legacy_load_scheduler(DDIMScheduler, state, "scheduler").config.prediction_type
    assert detected_prediction_type(state) == theirs == expected


@pytest.fixture(scope="module")
def sd2_v_file(tmp_path_factory):
    return save_single_file(build_tiny(**SD2_V_SHAPED), tmp_path_factory.mktemp("v") / "sd2-768.safetensors", with_config=False)


def test_an_sd2_768_file_loads_as_v_prediction_at_768_px(sd2_v_file):
    loaded = load_model(sd2_v_file)
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"
    assert loaded.denoiser.config.sample_size == 96  # 768 px with SD's VAE


def test_a1111_sidecar_without_parameterization_is_epsilon(sd2_v_file):
    """A1111's v2-inference.yaml (SD 2 base) beside a 1024-context file: epsilon at 512 px."""
    sidecar = sd2_v_file.with_suffix(".yaml")
    sidecar.write_text(LDM_CONFIG.format(extra=""))
    try:
        loaded = load_model(sd2_v_file)
    finally:
        sidecar.unlink()
    assert loaded.scheduler_config["prediction_type"] == "epsilon"
    assert loaded.denoiser.config.sample_size == 64


@pytest.mark.parametrize("text", [LDM_CONFIG.format(extra='    parameterization: "v"\n'), "parameterization: v\n"], ids=["a1111", "short"])
@pytest.mark.parametrize("with_config", [False, True])
def test_a_sidecar_saying_v_wins_over_the_file(tmp_path, text, with_config):
    """Over diffusers' rule (a narrow SD 2 file reads as epsilon) and over ldm's own config."""
    path = save_single_file(build_tiny(**SD2_SHAPED), tmp_path / "model.safetensors", with_config=with_config)
    assert load_model(path).scheduler_config["prediction_type"] == "epsilon"
    (tmp_path / "model.yaml").write_text(text)
    assert load_model(path).scheduler_config["prediction_type"] == "v_prediction"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("parameterization: x0\n", "parameterization 'x0' is not one ldm samples (eps or v)"),
        (LDM_CONFIG.format(extra="    parameterization: 7\n"), "parameterization 7 is not one"),
        ("format_version: 1\nmodel:\n  name: tiny\n", "is not an original Stable Diffusion config (no model.params)"),
        ("- a list\n", "is not an original Stable Diffusion config"),
    ],
)
def test_a_sidecar_that_cannot_be_read_is_a_one_line_error_naming_it(tmp_path, text, message):
    path = save_single_file(build_tiny(**SD2_SHAPED), tmp_path / "model.safetensors")
    (tmp_path / "model.yaml").write_text(text)
    with pytest.raises(ModelError, match="model.yaml") as error:
        load_model(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_ldm_generate_names_a_bad_sidecar_in_one_line(tmp_path):
    path = save_single_file(build_tiny(**SD2_SHAPED), tmp_path / "model.safetensors")
    (tmp_path / "model.yaml").write_text("parameterization: x0\n")
    from in_process import run_in_process

    from ldm.cli.generate import main

    # main() in this process: the real command's one-line exits are run in tests/cli.
    process = run_in_process("ldm-generate", main, "a boat", "--model", path, "--steps", 1, "--out", tmp_path / "out.png")
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1 and "model.yaml: parameterization 'x0'" in lines[0], process.stderr
