"""The work limit: the estimate of a request's seconds from its pixels, steps and images and
the machine's measured speed, and the 400 a request over the limit gets before any work."""

import pytest
from server_helpers import make_client

from ldm.pipeline import Pipeline
from ldm.server.a1111 import Job
from ldm.server.work import Cost, Speed, estimate, estimate_job, measure_speed
from ldm.server.worker import Worker
from ldm.settings import ControlUnit, Settings

# 1 ms per denoiser pass per latent cell, 2 ms per decode per cell, no attention term
LINEAR = Speed(Cost(0.0, 1e-3, 0.0), Cost(0.0, 2e-3, 0.0), latent_cell=64)


def test_the_fit_goes_through_the_three_measurements():
    truth = Cost(0.05, 2e-4, 3e-7)
    cells = (64, 256, 1024)
    fitted = Cost.fit(cells, tuple(truth.seconds(n) for n in cells))
    for got, want in zip((fitted.fixed, fitted.linear, fitted.quadratic), (truth.fixed, truth.linear, truth.quadratic)):
        assert got == pytest.approx(want)
    assert fitted.seconds(4096) == pytest.approx(truth.seconds(4096))  # 4x the cells: more than 4x the time


def test_noisy_measurements_give_a_line_that_does_not_underestimate_the_largest():
    fitted = Cost.fit((64, 256, 1024), (1.0, 0.5, 2.0))  # the smallest slowed down by a neighbour
    assert min(fitted.fixed, fitted.linear, fitted.quadratic) >= 0
    assert fitted.seconds(1024) >= 2.0 and fitted.seconds(4096) > fitted.seconds(1024)


def test_attention_makes_large_images_cost_more_than_their_pixels():
    speed = Speed(Cost(0.0, 1e-4, 1e-7), Cost(0.0, 0.0, 0.0), latent_cell=64)
    one = estimate(speed, Settings(steps=10, cfg=1.0), "txt2img", 1, (512, 512), two_passes=False).seconds
    big = estimate(speed, Settings(steps=10, cfg=1.0), "txt2img", 1, (1024, 1024), two_passes=False).seconds
    assert big > 4 * one * 1.5


@pytest.mark.parametrize(
    "settings, mode, images, two_passes, seconds",
    [
        # 64x64 = 64 cells: 0.064 s a pass, 0.128 s a decode
        (Settings(steps=10, sampler="euler"), "txt2img", 1, False, 10 * 0.064 + 0.128),
        (Settings(steps=10, sampler="euler"), "txt2img", 3, False, 3 * (10 * 0.064 + 0.128)),
        (Settings(steps=10, sampler="euler"), "txt2img", 1, True, 20 * 0.064 + 0.128),  # guidance: 2 passes
        (Settings(steps=10, sampler="heun"), "txt2img", 1, False, 19 * 0.064 + 0.128),  # Heun: 2 a step but the last
        (Settings(steps=10, sampler="euler", strength=0.5), "img2img", 1, False, 5 * 0.064 + 2 * 0.128),  # + encode
        (Settings(steps=10, sampler="euler", controls=(ControlUnit("c.png", "edges"),)), "txt2img", 1, False, 15 * 0.064 + 0.128),
    ],
)
def test_the_estimate_counts_passes_decodes_and_images(settings, mode, images, two_passes, seconds):
    found = estimate(LINEAR, settings, mode, images, (64, 64), two_passes)
    assert found.seconds == pytest.approx(seconds)


def test_a_whole_job_counts_every_iteration_and_the_model_defaults(tiny_components):
    pipeline = Pipeline(tiny_components)
    job = Job("txt2img", Settings(prompt="x", steps=10, cfg=1.0, n=2, batch_size=2, sampler="euler"), iterations=3)
    found = estimate_job(LINEAR, pipeline, job)
    cells = pipeline.default_size**2 // 64
    assert found.images == 6 and found.seconds == pytest.approx(6 * (10 * 1e-3 * cells + 2e-3 * cells))


def test_measured_speed_is_positive_and_finite(tiny_components):
    speed = measure_speed(Pipeline(tiny_components))
    for cost in (speed.denoiser, speed.vae):
        assert min(cost.fixed, cost.linear, cost.quadratic) >= 0 and 0 < cost.seconds(256) < 60


@pytest.fixture
def limited(tiny_components, tiny_model_dir):
    from ldm.server.worker import ModelEntry

    from server_helpers import TEST_LIMITS

    entry = ModelEntry("tiny-model", tiny_model_dir)
    worker = Worker(Pipeline(tiny_components), entry, [entry], Pipeline.load, TEST_LIMITS, max_work_seconds=10, measure=lambda _: LINEAR)
    yield worker
    worker.close()


def test_a_request_over_the_work_limit_is_a_400_with_the_estimate_before_any_work(limited):
    with make_client(limited) as client:
        # 64x64 on this speed: 0.064 s a pass, x2 with cfg, 0.128 s a decode: 8 x (100 x 0.128 + 0.128) s
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 100, "batch_size": 8, "width": 64, "height": 64})
        assert answer.status_code == 400, answer.text
        detail = answer.json()["detail"]
        assert "about 103 s of work" in detail and "8 images x 100 steps at 64x64" in detail and "limit of 10 s" in detail
        assert limited.progress.jobs_done == 0 and limited.queued == 0
        small = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
        assert small.status_code == 200 and limited.progress.jobs_done == 1


@pytest.mark.parametrize(
    "hires, seconds",
    [
        # first pass 32x32 = 16 cells: 10 x 0.016 s; the hires pass 64x64 = 64 cells: 4 steps x 0.064 s; a decode 0.128 s
        ({"hires_scale": 2, "hires_steps": 4}, 10 * 0.016 + 4 * 0.064 + 0.128),
        ({"hires_scale": 2}, 10 * 0.016 + 10 * 0.064 + 0.128),  # hires steps 0/None: the first pass's, all of them run
        ({"hires_scale": 2, "hires_strength": 0.0}, 10 * 0.016 + 0.128),  # strength 0: no step
        # a pixel upscaler decodes the first picture (0.032 s) and encodes the upscaled one (0.128 s)
        ({"hires_scale": 2, "hires_steps": 4, "hires_upscaler": "lanczos"}, 10 * 0.016 + 4 * 0.064 + 0.128 + 0.032 + 0.128),
    ],
)
def test_the_estimate_of_the_hires_fix_counts_both_passes(tiny_components, hires, seconds):
    pipeline = Pipeline(tiny_components)  # 32x32: the first pass's size
    job = Job("txt2img", Settings(prompt="x", steps=10, cfg=1.0, sampler="euler", **hires))
    found = estimate_job(LINEAR, pipeline, job)
    assert (found.width, found.height) == (64, 64) and found.seconds == pytest.approx(seconds)
