"""Prompts over 75 tokens and BREAK on SD3 (A1111's syntax): the CLIPs read 75-token chunks as
A1111 chunks them, side by side along the sequence, the pooled vector the first chunk's; T5 reads
the whole prompt in its own 256 tokens (BREAK dropped, cut after 255). A shorter negative prompt
is padded with the empty prompt's CLIP chunk, which the MMDiT (no positions on text tokens) reads
the same wherever it stands: the latents are diffusers' pipeline given the chunk before T5's tokens."""

import pytest
import torch
from reference import LastLatents
from sd3_folder import JOINT_WIDTH, write_tiny_sd3_folder

from ldm.pipeline import Pipeline, make_generators
from ldm.prompts.syntax import parse_attention

CHUNK = 77
T5_TOKENS = 256


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.load(write_tiny_sd3_folder(tmp_path_factory.mktemp("sd3-long"), 3.0, t5=True))


def weighted(pipe, prompt: str):
    return pipe.components.conditioner.weighted([parse_attention(prompt)])


def test_break_gives_the_clips_a_chunk_each_and_t5_the_whole_prompt(pipe):
    cond = weighted(pipe, "a cat BREAK a (dog:1.0)")
    assert cond.tokens.shape == (1, 2 * CHUNK + T5_TOKENS, JOINT_WIDTH)
    first, second, whole = weighted(pipe, "a cat"), weighted(pipe, "a dog"), weighted(pipe, "a cat a dog")
    assert torch.equal(cond.tokens[:, :CHUNK], first.tokens[:, :CHUNK])
    assert torch.equal(cond.tokens[:, CHUNK : 2 * CHUNK], second.tokens[:, :CHUNK])
    assert torch.allclose(cond.tokens[:, 2 * CHUNK :], whole.tokens[:, CHUNK:], atol=1e-6)
    assert torch.equal(cond.pooled, first.pooled)


def test_a_long_prompt_is_chunked_for_the_clips_and_cut_for_t5(pipe):
    t5 = pipe.components.text_encoders[2]
    prompt = "a red boat, " * 70
    assert t5.count_tokens(prompt) > T5_TOKENS
    cond = weighted(pipe, prompt)
    chunks = -(-pipe.components.text_encoders[0].count_tokens(prompt) // 75)
    assert chunks > 1 and cond.tokens.shape[1] == chunks * CHUNK + T5_TOKENS
    ids = t5.frame([t5.word_tokens(prompt)[: t5.max_tokens]])
    expected = t5(ids).hidden  # the first 255 tokens, then the end mark
    assert torch.allclose(cond.tokens[:, -T5_TOKENS:], expected, atol=1e-5)


def test_a_long_prompt_and_a_short_negative_sample_as_diffusers(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    prompt, negative = "a lake at dawn BREAK a red boat", "blurry"
    last = LastLatents()
    pipe.generate(prompt, negative=negative, n=2, steps=3, cfg=5.0, seed=3, width=32, height=32, callback=last, progress=False)
    cond, uncond, empty = weighted(pipe, prompt), weighted(pipe, negative), weighted(pipe, "")
    uncond_tokens = torch.cat([uncond.tokens[:, :CHUNK], empty.tokens[:, :CHUNK], uncond.tokens[:, CHUNK:]], dim=1)  # A1111's order
    parts = {k: v for k, v in pipe.components.modules().items()}
    theirs = StableDiffusion3Pipeline(
        transformer=parts["denoiser"], vae=parts["vae"], scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=None, text_encoder_2=None, text_encoder_3=None, tokenizer=None, tokenizer_2=None, tokenizer_3=None,
    )  # fmt: skip
    theirs.set_progress_bar_config(disable=True)
    latents = theirs(prompt_embeds=cond.tokens.repeat(2, 1, 1), pooled_prompt_embeds=cond.pooled.repeat(2, 1),
                     negative_prompt_embeds=uncond_tokens.repeat(2, 1, 1), negative_pooled_prompt_embeds=uncond.pooled.repeat(2, 1),
                     num_inference_steps=3, guidance_scale=5.0, generator=make_generators([3, 4]), width=32, height=32,
                     output_type="latent").images  # fmt: skip
    assert (last.latents - latents).abs().max().item() < 1e-4
