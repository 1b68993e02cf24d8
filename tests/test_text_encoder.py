"""The text encoders: open_clip's layers, tokenizer, real OpenCLIP weights from a local file;
pooled outputs as open_clip and transformers pool them."""

import pytest
import torch
from safetensors.torch import save_file

from ldm.formats.model_folder import ModelError
from ldm.config import TextEncoderConfig
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.text_encoder import HFClipTextEncoder, TextEncoder, build_text_encoder

SMALL = dict(width=32, heads=2, layers=3, embed_dim=16)


def open_clip_model():
    import open_clip

    torch.manual_seed(1)
    return open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"width": 32, "heads": 2, "layers": 3, "context_length": 77, "vocab_size": 49408},
    ).eval()


def test_last_layer_equals_open_clips_token_output():
    encoder = build_text_encoder(TextEncoderConfig(**SMALL)).eval()
    encoder.tower.output_tokens = True
    tokens = encoder.tokenize(["a lake at dawn", ""])
    assert tokens.shape == (2, 77)
    _, reference = encoder.tower(tokens)  # open_clip's own forward: ln_final of the last block
    assert torch.allclose(encoder(tokens).hidden, reference, atol=1e-6)


def test_penultimate_skips_the_last_block():
    last = build_text_encoder(TextEncoderConfig(**SMALL)).eval()
    penultimate = build_text_encoder(TextEncoderConfig(**SMALL, layer="penultimate")).eval()
    penultimate.load_state_dict(last.state_dict())
    tokens = last.tokenize(["snowy mountains at night"])
    tower = last.tower
    x = tower.token_embedding(tokens) + tower.positional_embedding
    for block in tower.transformer.resblocks[:-1]:
        x = block(x, attn_mask=tower.attn_mask)
    assert torch.allclose(penultimate(tokens).hidden, tower.ln_final(x), atol=1e-5)
    assert not torch.allclose(penultimate(tokens).hidden, last(tokens).hidden, atol=1e-3)


def test_real_openclip_weights_load_from_a_local_safetensors_file(tmp_path):
    clip = open_clip_model()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    encoder = build_text_encoder(TextEncoderConfig(**SMALL, pretrained=str(path))).eval()
    tokens = encoder.tokenize(["a red boat"])
    features = encoder.tower(tokens)  # pooled + projected, as CLIP.encode_text
    assert torch.allclose(features, clip.encode_text(tokens), atol=1e-5)


def test_pickled_or_mismatched_openclip_weights_are_refused(tmp_path):
    with pytest.raises(ModelError, match="pickled checkpoint"):
        build_text_encoder(TextEncoderConfig(**SMALL, pretrained=str(tmp_path / "open_clip_pytorch_model.bin")))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip_model().state_dict().items()}, str(path))
    with pytest.raises(ModelError, match="do not fit its config"):
        build_text_encoder(TextEncoderConfig(width=64, heads=2, layers=3, embed_dim=16, pretrained=str(path)))


@pytest.mark.parametrize("layer", ["last", "penultimate"])
def test_pooled_output_is_open_clips_encode_text(tmp_path, layer):
    """CLIP's text features (final-layer-normed end token, projected), from the last block
    whichever layer conditions the denoiser."""
    clip = open_clip_model()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    encoder = build_text_encoder(TextEncoderConfig(**SMALL, layer=layer, pretrained=str(path))).eval()
    tokens = encoder.tokenize(["a red boat", "a lake at dawn, with mist over the water"])
    with torch.no_grad():
        out = encoder(tokens)
        expected = clip.encode_text(tokens)
    assert out.pooled.shape == (2, 16) and out.hidden.shape == (2, 77, 32)
    assert torch.allclose(out.pooled, expected, atol=1e-5)
    assert not torch.allclose(out.pooled[0], out.pooled[1], atol=1e-3)  # one vector per prompt


def tiny_hf_clip(with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=24, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()
    return HFClipTextEncoder(model, tokenizer)


@pytest.mark.parametrize("with_projection", [False, True])
def test_pooled_output_is_transformers_own(with_projection):
    """CLIPTextModel: pooler_output (the end token, unprojected); CLIPTextModelWithProjection
    (SDXL's second encoder): text_embeds, the projected one."""
    encoder = tiny_hf_clip(with_projection)
    tokens = encoder.tokenize(["a red boat", "a lake at dawn, with mist over the water"])
    with torch.no_grad():
        out = encoder(tokens)
        theirs = encoder.model(tokens)
    expected = theirs.text_embeds if with_projection else theirs.pooler_output
    assert out.pooled.shape == (2, 24 if with_projection else 32)
    assert torch.equal(out.pooled, expected) and torch.equal(out.hidden, theirs.last_hidden_state)
    end = (tokens == encoder.tokenizer.eos_token_id).int().argmax(dim=1)  # the first end mark
    hidden_end = out.hidden[torch.arange(2), end]  # (2, 32): last_hidden_state is final-layer-normed
    pooled = hidden_end @ encoder.model.text_projection.weight.T if with_projection else hidden_end
    assert torch.allclose(out.pooled, pooled, atol=1e-6)


def test_both_encoders_are_text_encoders():
    assert isinstance(build_text_encoder(TextEncoderConfig(**SMALL)), TextEncoder)
    assert isinstance(tiny_hf_clip(False), TextEncoder)
