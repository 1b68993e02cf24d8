"""Stage `lora`: adapters that start as the base model exactly, train alone, resume exactly,
and export one small file that our loader and diffusers' load_lora_weights both apply to the
base model as the trained adapters were (kohya and peft layouts)."""

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from reference import diffusers_pipeline
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.config import ConfigError, from_dict
from ldm.training.config import TrainConfig
from ldm.training.loop import train


def lora_config(tmp_path, init_from, lora=None, validation=None, **train_settings):
    data = tiny_train_dict("lora", tmp_path / "run", **train_settings)
    data["lora"] = {"init_from": str(init_from), "rank": 2, "alpha": 4.0, **(lora or {})}
    if validation:
        data["validation"] = validation
    return from_dict(TrainConfig, data)


def denoiser_output(denoiser, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return denoiser(latents, torch.tensor([10, 700]), encoder_hidden_states=context).sample


def test_at_step_zero_the_adapters_change_nothing_and_only_they_train(tmp_path, tiny_model_dir):
    from ldm.formats.model_folder import load_model
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    stage = build_stage(StageContext(lora_config(tmp_path, tiny_model_dir), torch.device("cpu"), tmp_path, tiny_datasets()))
    trained = [name for name, p in stage.module.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)
    assert all(any(f".{t}." in name for t in ("to_q", "to_k", "to_v", "to_out")) for name in trained)
    assert torch.equal(denoiser_output(stage.module.denoiser), denoiser_output(load_model(tiny_model_dir).denoiser))


@pytest.mark.parametrize(("layout", "targets"), [("kohya", "attention"), ("peft", "attention"), ("kohya", "all")])
def test_the_file_applies_as_the_trained_adapters_in_ours_and_diffusers(tmp_path, tiny_model_dir, layout, targets):
    from safetensors import safe_open

    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = lora_config(tmp_path, tiny_model_dir, lora={"layout": layout, "targets": targets, "dtype": "fp32", "trigger_words": ["wndml"]}, max_steps=3, lr=1e-2)
    result = train(config, open_dataset=tiny_datasets())
    assert result.export_path == tmp_path / "run" / "lora.safetensors"
    with safe_open(str(result.export_path), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert all(k.startswith("lora_unet_" if layout == "kohya" else "unet.") for k in keys)
    assert any("conv" in k for k in keys) == (targets == "all")
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"], metadata["ldm_trigger_words"]) == ("2", "4", "wndml")
    assert metadata["ldm_base_model"] == str(tiny_model_dir)

    # The trained adapters as the stage left them: the last step's checkpoint holds them.
    from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint

    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / "x", tiny_datasets()))
    stage.module.load_state_dict(load_checkpoint(resolve_checkpoint("latest", tmp_path / "run")).weights, strict=False)
    trained = denoiser_output(stage.module.denoiser)

    base = load_model(tiny_model_dir)
    reference = copy.deepcopy(base)
    untouched = denoiser_output(base.denoiser)
    apply_loras(base, [(result.export_path, 1.0)])
    ours = denoiser_output(base.denoiser)
    assert (trained - untouched).abs().max() > 1e-3  # three steps at lr 1e-2 moved the adapters
    assert (ours - trained).abs().max() < 1e-5

    pipe = diffusers_pipeline(StableDiffusionPipeline, reference, "ddim")
    pipe.load_lora_weights(str(result.export_path), adapter_name="trained")
    assert (denoiser_output(pipe.unet) - trained).abs().max() < 1e-5


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_text_encoder_adapters_train_and_the_file_applies_them(tmp_path, tiny_model_dir, layout):
    """lora.text_encoder: adapters on the text encoder's Linear layers (not inside
    nn.MultiheadAttention, which reads its weights directly) train with the U-Net's; the file
    holds both, and our loader gives the trained encoder and denoiser back."""
    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = lora_config(tmp_path, tiny_model_dir, lora={"text_encoder": True, "layout": layout, "dtype": "fp32"}, max_steps=3, lr=1e-2)
    result = train(config, open_dataset=tiny_datasets())
    from safetensors import safe_open

    with safe_open(str(result.export_path), framework="pt") as handle:
        keys = list(handle.keys())
    text_prefix = "lora_te_" if layout == "kohya" else "text_encoder."
    assert any(k.startswith(text_prefix) for k in keys) and not any("attn" in k for k in keys if k.startswith(text_prefix))

    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / "x", tiny_datasets()))
    stage.module.load_state_dict(load_checkpoint(resolve_checkpoint("latest", tmp_path / "run")).weights, strict=False)
    encoder = stage.module.text_encoder
    tokens = encoder.tokenize(["a lake at dawn", "a red boat"])
    with torch.no_grad():
        trained = encoder(tokens).hidden
    base = load_model(tiny_model_dir)
    with torch.no_grad():
        untouched = base.first_text_encoder(tokens).hidden
    apply_loras(base, [(result.export_path, 1.0)])
    with torch.no_grad():
        ours = base.first_text_encoder(tokens).hidden
    assert (trained - untouched).abs().max() > 1e-4  # the encoder's adapters moved
    assert (ours - trained).abs().max() < 1e-5
    assert (denoiser_output(base.denoiser) - denoiser_output(stage.module.denoiser)).abs().max() < 1e-5


def test_text_encoder_lora_of_a_diffusers_folder_uses_kohyas_names(tmp_path):
    """A diffusers SD folder's CLIPTextModel: lora_te_text_model_encoder_... keys (what
    AUTOMATIC1111 and ComfyUI read), which our loader applies as trained."""
    from safetensors import safe_open
    from sd_folder import write_tiny_sd_folder
    from tiny import build_tiny

    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    folder = write_tiny_sd_folder(build_tiny(text_encoder__width=64, text_encoder__heads=1, unet__cross_attention_dim=64), tmp_path / "sd", text_heads=1)
    config = lora_config(tmp_path, folder, lora={"text_encoder": True, "dtype": "fp32"}, max_steps=2, lr=1e-2)
    config.model = load_model(folder).config or config.model
    result = train(config, open_dataset=tiny_datasets())
    with safe_open(str(result.export_path), framework="pt") as handle:
        text_keys = [k for k in handle.keys() if k.startswith("lora_te_")]
    assert text_keys and all(k.startswith("lora_te_text_model_encoder_layers_") for k in text_keys), text_keys[:3]
    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / "x", tiny_datasets()))
    stage.module.load_state_dict(load_checkpoint(resolve_checkpoint("latest", tmp_path / "run")).weights, strict=False)
    tokens = stage.module.text_encoder.tokenize(["a lake"])
    base = load_model(folder)
    apply_loras(base, [(result.export_path, 1.0)])
    with torch.no_grad():
        assert (base.first_text_encoder(tokens).hidden - stage.module.text_encoder(tokens).hidden).abs().max() < 1e-5


def test_a_lora_trains_from_a_single_file_checkpoint(tmp_path, tiny_components):
    """lora.init_from may be an original-layout .safetensors file (what most users keep)."""
    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.formats.single_file import save_single_file

    checkpoint = save_single_file(tiny_components, tmp_path / "model.safetensors")
    result = train(lora_config(tmp_path, checkpoint, max_steps=2, lr=5e-2), open_dataset=tiny_datasets())
    base = load_model(checkpoint)
    untouched = denoiser_output(base.denoiser)
    apply_loras(base, [(result.export_path, 1.0)])
    assert (denoiser_output(base.denoiser) - untouched).abs().max() > 1e-4


def test_text_encoder_targets_skip_blocks_the_encoder_does_not_read():
    from tiny import build_tiny

    from ldm.lora.adapters import text_encoder_targets

    last = build_tiny(text_encoder__layer="last").first_text_encoder
    penultimate = build_tiny(text_encoder__layer="penultimate").first_text_encoder
    assert {n.split(".")[3] for n in text_encoder_targets(last)} == {"0", "1"}  # tower.transformer.resblocks.N...
    assert {n.split(".")[3] for n in text_encoder_targets(penultimate)} == {"0"}
    assert not any("attn" in n for n in text_encoder_targets(last))


@pytest.mark.parametrize("lora", [{}, {"text_encoder": True}, {"tokens": ["red"]}])
def test_resume_continues_as_if_never_stopped(tmp_path, tiny_model_dir, lora):
    from ldm.formats.model_folder import read_safetensors
    from ldm.training.checkpoints import resolve_checkpoint

    straight = train(lora_config(tmp_path / "a", tiny_model_dir, lora, max_steps=4), open_dataset=tiny_datasets())
    train(lora_config(tmp_path / "b", tiny_model_dir, lora, max_steps=2), open_dataset=tiny_datasets())
    resumed = train(lora_config(tmp_path / "b", tiny_model_dir, lora, max_steps=4), resume=resolve_checkpoint("latest", tmp_path / "b" / "run"),
                    open_dataset=tiny_datasets())  # fmt: skip
    assert resumed.losses == straight.losses[2:]
    a, b = read_safetensors(straight.export_path), read_safetensors(resumed.export_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_validation_shows_each_prompt_without_and_with_the_lora(tmp_path, tiny_model_dir):
    validation = {"prompts": ["red", "blue"], "steps": 2}
    train(lora_config(tmp_path, tiny_model_dir, validation=validation, max_steps=2, lr=5e-2), open_dataset=tiny_datasets())
    grid = Image.open(tmp_path / "run" / "samples" / "step-000002.png")
    assert grid.size == (2 * 32, 2 * 32)
    without, with_lora = grid.crop((0, 0, 32, 32)), grid.crop((32, 0, 64, 32))
    assert without.tobytes() != with_lora.tobytes()


@pytest.mark.parametrize(("section", "message"), [
    ({"init_from": None}, "lora.init_from is required"),
    ({"rank": 0}, "lora.rank must be at least 1, got 0"),
    ({"targets": "mlp"}, "lora.targets is 'mlp'; expected one of attention, all"),
    ({"layout": "a1111"}, "lora.layout is 'a1111'; expected one of kohya, peft"),
    ({"name": "a/b"}, "lora.name must be a plain file name"),
])  # fmt: skip
def test_bad_lora_sections_are_config_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        lora_config(tmp_path, "model", lora=section)


@pytest.fixture
def backbone() -> str:
    """LoRAs in SD's key layout are U-Net things."""
    return "unet"


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the LoRAs adapt it): one folder per session."""
    return shared_tiny_model_dir
