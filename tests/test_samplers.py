"""Every sampler: right shape, finite, deterministic by seed; batch seeds equal lone runs."""

import numpy as np
import pytest
import torch
from tiny import build_tiny

from ldm.diffusion.samplers import DDPM_SAMPLER_NAMES, SAMPLER_NAMES, UnknownSampler, make_sampler
from ldm.settings import GenerationError
from ldm.pipeline import Pipeline, SampleRequest


def pixels(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32))


@pytest.mark.parametrize("sampler", DDPM_SAMPLER_NAMES)
def test_every_sampler_is_finite_shaped_and_seeded(tiny_components, sampler):
    pipe = Pipeline(tiny_components)
    context = pipe.encode_text(["a meadow"])
    uncond = pipe.encode_text([""])
    shape = pipe.latent_shape(1, 40, 24)
    runs = []
    for _ in range(2):
        from ldm.pipeline import make_generators

        generators = make_generators([3])
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        runs.append(pipe.sample(SampleRequest(context, uncond, noise, 5, 4.0, sampler, generators, progress=False)))
    assert runs[0].shape == (1, 4, 12, 20)
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])


def test_image_k_of_a_batch_equals_a_lone_run_with_seed_plus_k(tiny_components):
    pipe = Pipeline(tiny_components)
    batch = pipe.generate("a lake", n=3, steps=4, seed=20, sampler="euler-a", progress=False)
    alone = pipe.generate("a lake", n=1, steps=4, seed=22, sampler="euler-a", progress=False)
    assert batch.seeds == [20, 21, 22]
    assert (pixels(batch.images[2]) - pixels(alone.images[0])).abs().max() <= 1
    assert (pixels(batch.images[0]) - pixels(alone.images[0])).abs().max() > 1


def test_sizes_are_any_multiple_of_8(tiny_components):
    pipe = Pipeline(tiny_components)
    result = pipe.generate("a lake", steps=2, seed=0, width=24, height=40, progress=False)
    assert result.images[0].size == (24, 40)


def test_a_dit_refuses_sizes_its_patches_do_not_tile():
    pipe = Pipeline(build_tiny(denoiser="dit", dit__patch_size=8))  # 2 pixels a latent cell x 8 = 16 a patch
    with pytest.raises(GenerationError, match="^this model needs width and height in multiples of 16 pixels, got 24x32$"):
        pipe.generate("a lake", steps=1, seed=0, width=24, height=32, progress=False)
    assert pipe.generate("a lake", steps=1, seed=0, width=32, height=48, progress=False).images[0].size == (32, 48)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 30}, "width must be a positive multiple of 8"),
        ({"height": 0}, "height must be a positive multiple of 8"),
        ({"steps": 0}, "steps must be between 1 and 1000, got 0"),
        ({"steps": 1_000_000}, "steps must be between 1 and 1000"),
        ({"cfg": -1.0}, "cfg must be a finite number >= 0"),
        ({"cfg": float("inf")}, "cfg must be a finite number"),
        ({"cfg": float("nan")}, "cfg must be a finite number"),
        ({"n": 100_000}, "n must be between 1 and 1000"),
        ({"batch_size": -1}, "batch size must be at least 1"),
        ({"seed": 10**23}, "seed must be between 0 and 2\\*\\*63-1"),
        ({"seed": -1}, "seed must be between 0"),
        ({"width": 100_000, "height": 100_000}, "image 100000x100000 is 10000.0 megapixels, over the limit"),
        ({"sampler": "plms"}, "known samplers: ddpm, ddim"),
    ],
)
def test_bad_requests_are_refused_by_name(tiny_components, kwargs, message):
    with pytest.raises(GenerationError, match=message):
        Pipeline(tiny_components).generate("a lake", progress=False, **kwargs)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(UnknownSampler) as error:
        make_sampler("k_lms", {})
    assert all(name in str(error.value) for name in SAMPLER_NAMES)


def test_callback_sees_every_step(tiny_components):
    seen = []
    Pipeline(tiny_components).generate("a lake", steps=3, seed=0, sampler="ddim", callback=seen.append, progress=False)
    assert [info.step for info in seen] == [0, 1, 2]
    assert seen[-1].predicted_x0 is not None and seen[-1].latents.shape == (1, 4, 16, 16)
