"""Faster forms of a model for sampling (channels-last, torch.compile) draw the same images:
they change how the work is laid out, not what is computed."""

import numpy as np
import torch

from ldm.models.inference_speed import native_bf16, speed_up
from ldm.pipeline import Pipeline
from tiny import build_tiny


def image(pipe: Pipeline, **options) -> np.ndarray:
    return np.asarray(pipe.generate("a lake at dawn", steps=3, seed=1, progress=False, **options).images[0], dtype=np.int16)


def test_channels_last_and_compile_draw_what_the_plain_model_draws(backbone):
    plain = image(Pipeline(build_tiny(denoiser=backbone)))
    fast = Pipeline(speed_up(build_tiny(denoiser=backbone), channels_last=True, compile=True, backend="eager"))
    assert fast.components.denoiser._compiled_call_impl is not None  # compiled in place
    assert np.abs(image(fast) - plain).max() <= 1
    # Another size goes through the compiled modules too.
    assert np.abs(image(fast, width=48, height=32) - image(Pipeline(build_tiny(denoiser=backbone)), width=48, height=32)).max() <= 1


def test_channels_last_keeps_the_parameters_that_loras_change():
    components = build_tiny()
    before = {name: parameter for name, parameter in components.denoiser.named_parameters()}
    speed_up(components, channels_last=True)
    after = dict(components.denoiser.named_parameters())
    assert all(after[name] is parameter for name, parameter in before.items())
    conv = next(m for m in components.denoiser.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_native_bf16_is_false_on_devices_without_it():
    assert native_bf16(torch.device("meta")) is False
