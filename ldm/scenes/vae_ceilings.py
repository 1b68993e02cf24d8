"""What a VAE lets the scenes model reach at best: the evaluation's figures measured on real
drawings after the VAE and back, which is where a perfect denoiser would end.

Each figure is the one its target is stated for: PSNR on unseen scenes, the attribute judge's
accuracy on the seen and held-out prompts, the layout segmenter's region mIoU and the Canny
edge F1 (2 px) on the ControlNet evaluation's held-out scenes. A target above its ceiling
cannot be met by training the denoiser or a ControlNet longer: the VAE has to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ldm.scenes.attribute_classifier import AttributeClassifier
from ldm.scenes.control_evaluation import Adherence, held_out_case
from ldm.scenes.model_evaluation import judge, real_scenes, summarise
from ldm.scenes.prompts import EvalPrompt
from ldm.scenes.vae_reconstruction import reconstruction_scores, through_vae

CONTROL_TYPES = ("layout", "canny")


def vae_ceilings(
    pipe,
    classifier: AttributeClassifier,
    segmenter,
    prompts: Sequence[EvalPrompt],
    n_per_prompt: int,
    size: int,
    vae_images: int,
    progress: Callable | None = None,
) -> dict:
    """Plain numbers for `pipe`'s VAE: reconstruction, accuracy (seen / held-out, per
    attribute) and each control type's adherence, with the layout regions one by one."""
    judged = []
    adherence = {kind: Adherence(kind, segmenter if kind == "layout" else None) for kind in CONTROL_TYPES}
    indexed = list(enumerate(prompts))
    for p, prompt in progress(indexed) if progress else indexed:
        first = p * n_per_prompt
        judged.append(judge(classifier, prompt, through_vae(pipe, real_scenes(prompt, first, n_per_prompt, size))))
        cases = [held_out_case(prompt, first + k, size) for k in range(n_per_prompt)]
        for case, rebuilt in zip(cases, through_vae(pipe, [case.picture for case in cases])):
            for score in adherence.values():
                score.add(rebuilt, case)
    return {
        "reconstruction": reconstruction_scores(pipe, vae_images, size),
        "accuracy": summarise(judged)["accuracy"],
        "adherence": {kind: score.score() for kind, score in adherence.items()},
        "layout_by_region": adherence["layout"].details(),
    }
