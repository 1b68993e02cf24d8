"""A1111 prompts through the text side and the sampling run: weights applied as A1111 applies
them, long prompts in 75-token chunks, the negative prompt padded to the prompt's chunks, and
prompt editing switching the conditioning at its step."""

import numpy as np
import pytest
import torch

from ldm.diffusion.conditioning_schedule import FOREVER, ConditioningSchedule, token_count
from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.samplers import make_sampler
from ldm.diffusion.sampling import denoise
from ldm.pipeline import Pipeline, SampleRequest
from ldm.prompts.syntax import parse_attention

LONG = " ".join(["cat"] * 75)  # one full chunk: "cat" is one token


def encode(components, prompts):
    with torch.no_grad():
        return components.conditioner.weighted([parse_attention(p) for p in prompts])


def by_hand(components, texts):
    encoder = components.first_text_encoder
    with torch.no_grad():
        return encoder(encoder.tokenize(texts)).hidden


def off_centre(components):
    """A tiny encoder whose hidden states have a mean, as trained CLIPs' have (an untrained
    layer norm centres every token on 0)."""
    with torch.no_grad():
        components.first_text_encoder.tower.ln_final.bias.fill_(0.1)
    return components


def test_weights_scale_the_hidden_states_then_restore_their_mean(tiny_unet_components):
    off_centre(tiny_unet_components)
    cond = encode(tiny_unet_components, ["a (red:1.5) [boat]"])
    hidden = by_hand(tiny_unet_components, ["a red boat"])  # (1, 77, D); tokens: start, a, red, boat, end
    weights = torch.ones(1, 77)
    weights[0, 2], weights[0, 3] = 1.5, 1 / 1.1
    expected = hidden * weights[..., None]
    expected = expected * (hidden.mean() / expected.mean())
    torch.testing.assert_close(cond.tokens, expected)
    torch.testing.assert_close(cond.tokens.mean(), hidden.mean())
    assert not torch.allclose(cond.tokens, hidden)


def test_a_centred_encoder_gets_its_weights_without_the_rescaling(tiny_unet_components):
    cond = encode(tiny_unet_components, ["a (red:1.5) boat"])
    hidden = by_hand(tiny_unet_components, ["a red boat"])
    assert hidden.mean().abs() < 1e-6
    expected = hidden.clone()
    expected[0, 2] *= 1.5
    torch.testing.assert_close(cond.tokens, expected)


def test_an_unweighted_prompt_is_encoded_exactly_as_plain_text(tiny_unet_components):
    cond = encode(tiny_unet_components, ["a lake at dawn"])
    assert torch.equal(cond.tokens, tiny_unet_components.conditioner(["a lake at dawn"]).tokens)


def test_a_150_token_prompt_is_its_two_chunks_encoded_and_concatenated(tiny_unet_components):
    cond = encode(tiny_unet_components, [f"{LONG} {LONG.replace('cat', 'dog')}"])
    first, second = by_hand(tiny_unet_components, [LONG]), by_hand(tiny_unet_components, [LONG.replace("cat", "dog")])
    assert cond.tokens.shape == (1, 154, 32)
    torch.testing.assert_close(cond.tokens, torch.cat([first, second], dim=1))
    pooled = tiny_unet_components.first_text_encoder(tiny_unet_components.first_text_encoder.tokenize([LONG])).pooled
    torch.testing.assert_close(cond.pooled, pooled.detach())  # the first chunk's, as A1111


def test_break_and_the_shorter_prompt_of_a_batch_get_empty_chunks(tiny_unet_components):
    cond = encode(tiny_unet_components, ["a lake BREAK at dawn", "a lake"])
    empty = by_hand(tiny_unet_components, [""])
    assert cond.tokens.shape == (2, 154, 32)
    torch.testing.assert_close(cond.tokens[:, :77], by_hand(tiny_unet_components, ["a lake", "a lake"]))
    torch.testing.assert_close(cond.tokens[0, 77:], by_hand(tiny_unet_components, ["at dawn"])[0])
    torch.testing.assert_close(cond.tokens[1, 77:], empty[0])


@pytest.mark.parametrize("long_one", ["prompt", "negative"])
def test_the_negative_prompt_is_padded_to_the_prompts_chunks_and_vice_versa(tiny_unet_components, long_one):
    pipe = Pipeline(tiny_unet_components)
    prompt, negative = (f"{LONG} a lake", "blurry") if long_one == "prompt" else ("a lake", f"{LONG} blurry")
    settings = pipe.request(prompt, {"negative": negative, "steps": 2, "cfg": 7.5, "seed": 0})
    cond, uncond = pipe.prompt_contexts([settings], [])
    assert token_count(cond) == token_count(uncond) == 154
    short = uncond if long_one == "prompt" else cond
    empty = by_hand(tiny_unet_components, [""])
    torch.testing.assert_close(short.first.tokens[:, 77:], empty)
    torch.testing.assert_close(short.first.tokens[:, :77], by_hand(tiny_unet_components, ["blurry" if long_one == "prompt" else "a lake"]))


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_the_image_changes_when_the_second_chunk_changes_and_plain_cuts_it(tiny_components):
    pipe = Pipeline(tiny_components)
    options = dict(steps=2, seed=3, progress=False)
    red, blue = pipe.generate(f"{LONG} red", **options), pipe.generate(f"{LONG} blue", **options)
    assert np.abs(pixels(red) - pixels(blue)).max() > 0
    assert not any("tokens" in note for note in red.notes)
    plain = dict(options, prompt_syntax="plain")
    red, blue = pipe.generate(f"{LONG} red", **plain), pipe.generate(f"{LONG} blue", **plain)
    assert np.array_equal(pixels(red), pixels(blue))  # plain reads the first 75 tokens
    assert "prompt is 76 tokens; the text encoder reads the first 75, the rest is ignored" in red.notes


def test_plain_syntax_reads_brackets_as_characters(tiny_unet_components):
    pipe = Pipeline(tiny_unet_components)
    plain = pipe.encode_prompt("(a lake:1.5)", 1, 4, "plain").first
    torch.testing.assert_close(plain.tokens, pipe.encode_text(["(a lake:1.5)"]).tokens)
    a1111 = pipe.encode_prompt("(a lake:1.5)", 1, 4).first
    assert not torch.allclose(plain.tokens, a1111.tokens)


def test_prompt_editing_gives_each_step_its_texts_encoding(tiny_unet_components):
    pipe = Pipeline(tiny_unet_components)
    schedule = pipe.encode_prompt("a [lake:desert:0.5] at dawn", 2, 4)
    assert [last for last, _ in schedule.entries] == [2, 4]
    for (_, cond), text in zip(schedule.entries, ["a lake at dawn", "a desert at dawn"]):
        assert len(cond) == 2
        torch.testing.assert_close(cond.tokens, pipe.encode_text([text] * 2).tokens)


def test_prompt_editing_equals_switching_the_conditioning_by_hand(tiny_components):
    """Evaluation i (from 0) takes the first text whose last step is >= i, as A1111's denoiser
    counts: [lake:desert:2] of 4 steps is the lake for evaluations 0-2, the desert for 3."""
    pipe = Pipeline(tiny_components)
    noise = torch.randn(pipe.latent_shape(1, 64, 64), generator=torch.Generator().manual_seed(0))
    uncond = pipe.encode_text([""])
    cond = pipe.encode_prompt("a [lake:desert:2]", 1, 4)
    sampled = pipe.sample(SampleRequest(cond, uncond, noise, 4, 5.0, "euler", progress=False))

    (_, lake), (_, desert) = cond.entries  # each text's encoding (the test above compares them with encode_text)
    sampler = make_sampler("euler", tiny_components.scheduler_config)
    timesteps = sampler.set_timesteps(4)
    latents, switched = sampler.start(noise), []

    def by_step(x, t):
        step = len(switched)
        switched.append(step)
        return GuidedModel(tiny_components.denoiser, lake if step <= 2 else desert, uncond, 5.0)(x, t)

    with torch.no_grad():
        expected = denoise(by_step, sampler, latents, timesteps, progress=False)
    torch.testing.assert_close(sampled, expected)
    unchanged = pipe.sample(SampleRequest(lake, uncond, noise, 4, 5.0, "euler", progress=False))
    assert not torch.allclose(sampled, unchanged)


def test_the_guided_models_schedule_pairs_the_prompts_and_the_negatives(tiny_unet_components):
    pipe = Pipeline(tiny_unet_components)
    cond = pipe.encode_prompt("[a|b]", 1, 3)
    uncond = pipe.encode_prompt("[x:y:2]", 1, 3)
    model = GuidedModel(tiny_unet_components.denoiser, cond, uncond, 7.5)
    assert [last for last, _ in model.schedule.entries] == [1, 2, 3]
    expected = [("a", "x"), ("a", "x"), ("b", "x"), ("a", "y"), ("a", "y")]  # evaluations 0-4
    for step, (positive, negative) in enumerate(expected):
        model.step = step
        torch.testing.assert_close(model.cond.tokens[0], pipe.encode_text([negative]).tokens[0])
        torch.testing.assert_close(model.cond.tokens[1], pipe.encode_text([positive]).tokens[0])
    assert ConditioningSchedule.of(cond) is cond and ConditioningSchedule.of(cond.first).entries[0][0] == FOREVER


def test_editing_composes_with_img2img_and_inpainting(tiny_components):
    from PIL import Image

    pipe = Pipeline(tiny_components)
    image = Image.new("RGB", (64, 64), (120, 80, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    options = dict(steps=4, seed=1, progress=False, width=64, height=64)
    edited = pipe.img2img("a [lake:desert:1]", image, strength=0.75, **options)
    lake = pipe.img2img("a lake", image, strength=0.75, **options)
    assert not np.array_equal(pixels(edited), pixels(lake))  # 3 evaluations: the desert from the third
    inpainted = pipe.inpaint("a [lake|desert]", image, mask, **options)
    assert inpainted.images[0].size == (64, 64)
