"""The open_clip text encoder: layers, tokenizer, real OpenCLIP weights from a local file."""

import pytest
import torch
from safetensors.torch import save_file

from ldm.formats.model_folder import ModelError
from ldm.config import TextEncoderConfig
from ldm.models.text_encoder import build_text_encoder

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
    assert torch.allclose(encoder(tokens), reference, atol=1e-6)


def test_penultimate_skips_the_last_block():
    last = build_text_encoder(TextEncoderConfig(**SMALL)).eval()
    penultimate = build_text_encoder(TextEncoderConfig(**SMALL, layer="penultimate")).eval()
    penultimate.load_state_dict(last.state_dict())
    tokens = last.tokenize(["snowy mountains at night"])
    tower = last.tower
    x = tower.token_embedding(tokens) + tower.positional_embedding
    for block in tower.transformer.resblocks[:-1]:
        x = block(x, attn_mask=tower.attn_mask)
    assert torch.allclose(penultimate(tokens), tower.ln_final(x), atol=1e-5)
    assert not torch.allclose(penultimate(tokens), last(tokens), atol=1e-3)


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
