"""Requests whose full-resolution attention would not finish in reasonable time are refused
before any work (ldm.pipeline.step_time): the built-in model's 512 px is served and the
1448 px that took 11 minutes a step is not; the message names the size that fits; the
command line answers one line and exit 2, nothing written."""

import pytest
import torch
from tiny import build_tiny

from ldm.builtin_models import resolve_model
from ldm.cli import generate
from ldm.formats.model_folder import load_model
from ldm.pipeline import Pipeline
from ldm.diffusion.backbones import backbone_of
from ldm.pipeline.step_time import check_step_time, step_seconds
from ldm.settings import GenerationError, Limits


@pytest.fixture
def backbone():
    return "unet"


@pytest.fixture
def two_threads(monkeypatch):
    """The CPU the rule was measured on (2 threads), whatever this run's OMP_NUM_THREADS."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)


def test_the_builtin_model_draws_512_px_and_is_refused_1448_px(two_threads):
    pipe = Pipeline(load_model(resolve_model("scenes")))
    # Measured on the 2-core CPU: 5.9 s of attention in a 512 px step (estimate 5.8), 33 s at 768 (29).
    assert 5 < step_seconds(pipe, 512, 512, guided=True) < 7
    check_step_time(pipe, (512, 512), True, Limits())
    check_step_time(pipe, (768, 768), True, Limits())
    with pytest.raises(GenerationError) as refused:
        check_step_time(pipe, (1448, 1448), True, Limits())
    assert str(refused.value) == (
        "one denoising step at 1448x1448 is about 372 s of full-resolution attention on cpu (the limit is 60 s, "
        "--max-step-seconds): draw at 912x912 or smaller, e.g. at the model's 128 px with --hires-scale"
    )


def test_attention_grows_with_the_square_of_the_cells(tiny_components):
    # Attention at the top level: 1 block down, 2 up, and 1 mid.
    assert backbone_of(tiny_components.denoiser).attention_layers(256) == [(256, 16), (64, 32), (256, 16), (256, 16)]
    pipe = Pipeline(tiny_components)
    assert step_seconds(pipe, 64, 64, guided=False) == pytest.approx(16 * step_seconds(pipe, 32, 32, guided=False), rel=0.01)
    assert step_seconds(pipe, 32, 32, guided=True) == 2 * step_seconds(pipe, 32, 32, guided=False)


def test_a_dit_attends_over_its_patches_in_every_layer():
    denoiser = build_tiny(denoiser="dit").denoiser  # 2 layers, 4 heads of 16, patch size 2
    assert backbone_of(denoiser).attention_layers(256) == [(64, 64), (64, 64)]


def limit_between_32_and_64_px(components) -> Limits:
    pipe = Pipeline(components)
    return Limits(max_step_seconds=2 * step_seconds(pipe, 32, 32, guided=True))


def test_a_step_over_the_limit_is_refused_before_any_work(tiny_components):
    pipe, steps = Pipeline(tiny_components), []
    limits = limit_between_32_and_64_px(tiny_components)
    assert len(pipe.generate("a lake", steps=1, seed=0, limits=limits, progress=False).images) == 1
    with pytest.raises(GenerationError, match=r"^one denoising step at 64x64 is about .* draw at 32x32 or smaller"):
        pipe.generate("a lake", width=64, height=64, steps=1, limits=limits, callback=steps.append, progress=False)
    assert steps == []


def test_the_command_line_refuses_in_one_line_with_exit_2(tiny_model_dir, tiny_components, tmp_path, capsys):
    out = tmp_path / "out.png"
    limit = limit_between_32_and_64_px(tiny_components).max_step_seconds
    argv = ["a lake", "--model", str(tiny_model_dir), "--steps", "1", "--quiet", "--out", str(out), "--max-step-seconds", repr(limit)]
    with pytest.raises(SystemExit) as stop:
        generate.main([*argv, "--width", "64", "--height", "64"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("ldm-generate: error: one denoising step at 64x64 is about ") and "draw at 32x32 or smaller" in err
    assert not out.exists()
    assert generate.main(argv) == 0 and out.exists()
