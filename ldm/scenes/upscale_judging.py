"""Issue 26's check that an upscale keeps what a picture shows: the built-in model draws the
evaluation prompts at its own size, the attribute judge reads them; the upscaler enlarges
each (the prompt as its prompt), the picture is brought back to the judge's size
(antialiased bicubic, as the upscaler's training pairs are made) and read again. Goal: the
accuracy after within 1 point of before."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image

from ldm.data.degradations import downscale
from ldm.images import from_pil, to_pil
from ldm.scenes.attribute_classifier import AttributeClassifier
from ldm.scenes.prompts import EvalPrompt
from ldm.scenes.scoring import score_predictions

DRAW = {"steps": 20, "sampler": "dpm++2m", "cfg": 7.5}  # the built-in model's evaluation settings


def back_to_size(picture: Image.Image, size: int) -> Image.Image:
    """`picture` downscaled to `size` a side as the upscaler's training pairs are made."""
    return to_pil(downscale(from_pil([picture]), picture.width // size))[0]


def judge_upscaled(
    base,
    upscaler,
    classifier: AttributeClassifier,
    prompts: Sequence[EvalPrompt],
    n_per_prompt: int,
    seed: int = 0,
    progress: Callable | None = None,
    **options,
) -> dict:
    """{"before": accuracy by group, "after": accuracy by group} for `n_per_prompt` pictures
    of each prompt drawn by `base` (image k of prompt p: seed + p * n + k) and upscaled
    (`options`: the upscale's steps, noise_level, ...)."""
    before, after = [], []
    indexed = list(enumerate(prompts))
    for p, prompt in progress(indexed) if progress else indexed:
        drawn = base.generate(prompt.text, n=n_per_prompt, seed=seed + p * n_per_prompt, progress=False, **DRAW).images
        upscaled = [upscaler.upscale(prompt.text, picture, seed=seed, progress=False, **options).images[0] for picture in drawn]
        judged = [back_to_size(picture, drawn[0].width) for picture in upscaled]
        before.append(classifier.predict(from_pil(drawn))[0])
        after.append(classifier.predict(from_pil(judged))[0])
    return {"before": score_predictions(prompts, before), "after": score_predictions(prompts, after)}
