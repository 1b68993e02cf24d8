"""lora.tokens: embedding rows of one-token words train beside the adapters (textual
inversion), travel in the LoRA file as AUTOMATIC1111's bundled embeddings, and our loader
puts them back: prompts with the word change as trained, prompts without it not at all."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.config import ConfigError, from_dict
from ldm.training.config import TrainConfig
from ldm.training.loop import train

PROMPTS = ["red over blue", "green over blue"]  # the first has the learned word, the second not


def tokens_config(tmp_path, init_from, lora=None, **train_settings):
    data = tiny_train_dict("lora", tmp_path / "run", **train_settings)
    data["lora"] = {"init_from": str(init_from), "rank": 2, "tokens": ["red"], "dtype": "fp32", **(lora or {})}
    return from_dict(TrainConfig, data)


def build(config, folder):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    return build_stage(StageContext(config, torch.device("cpu"), folder, tiny_datasets()))


def encoded(encoder, prompts=PROMPTS):
    with torch.no_grad():
        return encoder(encoder.tokenize(prompts)).hidden


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_learned_rows_train_and_the_file_puts_them_back(tmp_path, tiny_model_dir, layout):
    from safetensors import safe_open

    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint

    config = tokens_config(tmp_path, tiny_model_dir, {"layout": layout}, max_steps=3, lr=5e-2)
    base = load_model(tiny_model_dir)
    untouched = encoded(base.first_text_encoder)
    fresh = build(config, tmp_path / "fresh")
    trained_names = [name for name, p in fresh.module.named_parameters() if p.requires_grad]
    assert "tokens.rows" in trained_names and all(n == "tokens.rows" or ".lora_" in n for n in trained_names)
    assert torch.equal(encoded(fresh.module.conditioner.encoders[0]), untouched)  # step 0: the rows are the table's

    result = train(config, open_dataset=tiny_datasets())
    with safe_open(str(result.export_path), framework="pt") as handle:
        assert handle.get_tensor("bundle_emb.red.string_to_param.*").shape == (1, 32)
        metadata = handle.metadata()
    assert metadata["ldm_trigger_words"] == "red"
    assert json.loads(metadata["ldm_training"])["text2img"]["min_snr_gamma"] == config.text2img.min_snr_gamma  # the loss settings too
    stage = build(config, tmp_path / "x")
    stage.module.load_state_dict(load_checkpoint(resolve_checkpoint("latest", tmp_path / "run")).weights, strict=False)
    trained = encoded(stage.module.conditioner.encoders[0])

    applied = apply_loras(base, [(result.export_path, 1.0)])
    ours = encoded(base.first_text_encoder)
    assert (trained[0] - untouched[0]).abs().max() > 1e-3  # the word's row moved
    assert (ours[0] - trained[0]).abs().max() < 1e-6
    assert torch.equal(ours[1], untouched[1])  # a prompt without the word is as it was
    applied.unload()
    assert torch.equal(encoded(base.first_text_encoder), untouched)


def test_a_bundled_embedding_gives_what_diffusers_textual_inversion_gives(tmp_path):
    """An independent reading: diffusers' load_textual_inversion adds the vector as a new
    token; our file puts it in the one-token word's row. Same prompt embeddings."""
    from diffusers import StableDiffusionPipeline
    from sd_folder import write_tiny_sd_folder
    from tiny import build_tiny

    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model

    folder = write_tiny_sd_folder(build_tiny(text_encoder__width=64, text_encoder__heads=1, unet__cross_attention_dim=64), tmp_path / "sd", text_heads=1)
    vector = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    save_file({"bundle_emb.x.string_to_param.*": vector}, str(tmp_path / "x-lora.safetensors"))
    components = load_model(folder)
    apply_loras(components, [(tmp_path / "x-lora.safetensors", 1.0)])
    ours = encoded(components.first_text_encoder, ["a x b"])

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(vector, token="<x>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    theirs, _ = pipe.encode_prompt("a <x> b", "cpu", 1, False)
    assert (ours - theirs).abs().max() < 1e-5
    assert (ours - encoded(load_model(folder).first_text_encoder, ["a x b"])).abs().max() > 1e-3


@pytest.mark.parametrize(("state", "message"), [
    ({"bundle_emb.red.string_to_param.*": torch.zeros(2, 32)}, r"embedding 'red' is \(2, 32\); this model takes one vector of width 32"),
    ({"bundle_emb.red.emb_params": torch.zeros(1, 16)}, r"embedding 'red' is \(1, 16\)"),
    ({"bundle_emb.sailboat.string_to_param.*": torch.zeros(1, 32)}, r"embedding 'sailboat' is 2 tokens \(sail, boat\), not one"),
])  # fmt: skip
def test_embeddings_that_do_not_fit_are_one_line_errors(tmp_path, tiny_model_dir, state, message):
    from ldm.lora.apply import LoraError, apply_loras
    from ldm.formats.model_folder import load_model

    save_file(state, str(tmp_path / "bad.safetensors"))
    components = load_model(tiny_model_dir)
    before = encoded(components.first_text_encoder)
    with pytest.raises(LoraError, match=message) as error:
        apply_loras(components, [(tmp_path / "bad.safetensors", 1.0)])
    assert "\n" not in str(error.value)
    assert torch.equal(encoded(components.first_text_encoder), before)


def test_a_word_of_several_tokens_is_a_config_error_naming_its_pieces(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match=r"lora.tokens: 'sailboat' is 2 tokens \(sail, boat\), not one"):
        train(tokens_config(tmp_path, tiny_model_dir, {"tokens": ["sailboat"]}, max_steps=1), open_dataset=tiny_datasets())
    assert not (tmp_path / "run" / "lora.safetensors").exists()


@pytest.mark.parametrize("word", ["Red", "two words", "a.b", ""])
def test_tokens_must_be_plain_lower_case_words(tmp_path, word):
    with pytest.raises(ConfigError, match="lora.tokens: .* is not a lower-case word without spaces or dots"):
        tokens_config(tmp_path, "model", {"tokens": [word]})


@pytest.fixture
def backbone() -> str:
    return "unet"  # LoRAs adapt U-Nets


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the LoRAs adapt it): one folder per session."""
    return shared_tiny_model_dir


def test_merging_a_lora_keeps_its_learned_rows(tmp_path, tiny_model_dir):
    """ldm-convert --lora: the merged model's text encoder reads the word as the LoRA does."""
    from ldm.lora.apply import apply_loras
    from ldm.lora.merge import merge_lora_into_folder
    from ldm.formats.model_folder import load_model

    vector = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    save_file({"bundle_emb.red.string_to_param.*": vector}, str(tmp_path / "red-lora.safetensors"))
    merged = load_model(merge_lora_into_folder(tiny_model_dir, [(tmp_path / "red-lora.safetensors", 1.0)], tmp_path / "merged"))
    applied = load_model(tiny_model_dir)
    apply_loras(applied, [(tmp_path / "red-lora.safetensors", 1.0)])
    assert torch.equal(encoded(merged.first_text_encoder), encoded(applied.first_text_encoder))
    assert not torch.equal(encoded(merged.first_text_encoder), encoded(load_model(tiny_model_dir).first_text_encoder))
