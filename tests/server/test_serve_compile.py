"""ldm-serve compiles its model by default and pays for it at startup (a warm-up image), so
no request waits for the compiler; where compiling fails it serves the model uncompiled."""

import functools

import pytest
import torch

import ldm.pipeline
from ldm.cli.common import resolve_dtype
from ldm.cli.serve import build_parser, model_loader
from ldm.models.inference_speed import speed_up


def test_the_server_compiles_by_default_and_the_generate_command_does_not():
    from ldm.cli.generate import build_parser as generate_parser

    assert build_parser().parse_args([]).compile is True
    assert build_parser().parse_args(["--no-compile"]).compile is False
    assert generate_parser().parse_args(["x"]).compile is False


def test_a_compiled_model_is_warmed_up_before_it_serves(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(ldm.pipeline.core, "speed_up", functools.partial(speed_up, backend="eager"))  # seconds, not minutes
    warmed = []
    monkeypatch.setattr(ldm.pipeline.Pipeline, "warm_up", lambda self: warmed.append(self))
    args = build_parser().parse_args(["--device", "cpu", "--dtype", "fp32"])
    pipeline = model_loader(args, torch.device("cpu"))(tiny_model_dir)
    assert warmed == [pipeline]
    assert pipeline.components.denoiser._compiled_call_impl is not None
    assert "compiling" in capsys.readouterr().err


def test_when_compiling_fails_the_model_is_served_uncompiled(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(ldm.pipeline.core, "speed_up", functools.partial(speed_up, backend="eager"))

    def no_compiler(self):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    monkeypatch.setattr(ldm.pipeline.Pipeline, "warm_up", no_compiler)
    args = build_parser().parse_args(["--device", "cpu", "--dtype", "fp32"])
    pipeline = model_loader(args, torch.device("cpu"))(tiny_model_dir)
    assert pipeline.components.denoiser._compiled_call_impl is None
    err = capsys.readouterr().err
    assert "compiling failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found); running uncompiled" in err


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_a_cpu_is_bf16_only_compiled_and_where_the_cpu_has_it(monkeypatch, native):
    import ldm.models.inference_speed

    monkeypatch.setattr(ldm.models.inference_speed, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu, compiled=True) == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("auto", cpu, compiled=False) == torch.float32
    assert resolve_dtype("fp32", cpu, compiled=True) == torch.float32
