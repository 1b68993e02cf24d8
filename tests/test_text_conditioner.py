"""The text side: a list of text encoders whose outputs become one Conditioning; the
pipeline and the model's parts go through it."""

import pytest
import torch

from tiny import build_tiny

from ldm.diffusion.conditioning import Conditioning
from ldm.models.text_conditioner import TextConditioner, one_encoder
from ldm.pipeline import Pipeline

PROMPTS = ["a lake at dawn", "a red boat"]


def test_one_encoders_hidden_states_are_the_tokens_and_its_pooled_output_the_pooled_vector():
    components = build_tiny()
    encoder = components.first_text_encoder
    with torch.no_grad():
        cond = components.conditioner(PROMPTS)
        expected = encoder(encoder.tokenize(PROMPTS))
    assert torch.equal(cond.tokens, expected.hidden) and torch.equal(cond.pooled, expected.pooled)
    assert cond.pooled.shape == (2, 16) and cond.mask is None and cond.concat is None and not cond.vectors


def test_the_pipeline_encodes_through_the_text_side_in_the_denoisers_dtype():
    components = build_tiny()
    components.denoiser.to(torch.float64)  # the text encoder stays float32
    cond = Pipeline(components).encode_text(PROMPTS)
    with torch.no_grad():
        expected = components.conditioner(PROMPTS)
    assert expected.tokens.dtype == torch.float32 and cond.tokens.dtype == cond.pooled.dtype == torch.float64
    assert torch.equal(cond.tokens, expected.tokens.double()) and torch.equal(cond.pooled, expected.pooled.double())


def test_a_second_encoder_is_one_more_entry_and_its_own_combine():
    """As SDXL's two encoders would be: hidden states side by side, the second's pooled vector."""
    first, second = build_tiny().first_text_encoder, build_tiny(text_encoder__width=64, text_encoder__heads=4).first_text_encoder

    def side_by_side(encodings) -> Conditioning:
        return Conditioning(torch.cat([e.hidden for e in encodings], dim=-1), pooled=encodings[-1].pooled)

    components = build_tiny()
    components.conditioner = TextConditioner([first, second], side_by_side)
    with torch.no_grad():
        cond = components.conditioner(PROMPTS)
        alone = second(second.tokenize(PROMPTS))
    assert cond.tokens.shape == (2, 77, 32 + 64)
    assert torch.equal(cond.tokens[..., 32:], alone.hidden) and torch.equal(cond.pooled, alone.pooled)
    assert list(components.modules()) == ["vae", "text_encoder", "text_encoder_2", "denoiser"]
    assert components.first_text_encoder is first
    with pytest.raises(ValueError, match="combines one text encoder's output, got 2"):
        TextConditioner([first, second])(PROMPTS)
    with pytest.raises(ValueError, match="got 0"):
        one_encoder([])


def test_truncation_names_the_count_and_the_room_of_the_encoder_that_cuts():
    conditioner = build_tiny().conditioner
    room = conditioner.encoders[0].max_tokens
    assert room == 75
    assert conditioner.truncation(" ".join(["lake"] * room)) is None
    assert conditioner.truncation(" ".join(["lake"] * (room + 3))) == (room + 3, room)


def test_replacing_the_first_text_encoder_replaces_the_one_the_text_side_uses():
    components, other = build_tiny(), build_tiny(text_encoder__layer="penultimate").first_text_encoder
    components.first_text_encoder = other
    assert components.conditioner.encoders == [other] and components.modules()["text_encoder"] is other
