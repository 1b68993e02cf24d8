"""Sharded launches (accelerate's FSDP or DeepSpeed) that cannot train correctly are refused at
start in one line, before any model is built; the accelerator's distributed type is faked here
(accelerate only reports FSDP or DeepSpeed on GPUs)."""

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

from configs import tiny_train_config
from test_cli_train import write_config

from ldm.cli.train import main
from ldm.config import ConfigError
from ldm.training import fsdp_state, loop, sharding


def fake_accelerator(kind, version=2, offload=None):
    plugin = SimpleNamespace(fsdp_version=version, cpu_offload=offload or OffloadPolicy())
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin))


def stage_config(stage, compile=False):
    """What the check reads of a config (tiny configs of some stages need a teacher folder)."""
    return SimpleNamespace(stage=stage, train=SimpleNamespace(compile=compile), lora=SimpleNamespace(tokens=[]))


def refusal(config, accelerator) -> str:
    with pytest.raises(ConfigError) as error:
        sharding.check_sharding(config, accelerator)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_kinds_read_from_the_accelerator():
    assert sharding.sharding_of(fake_accelerator(DistributedType.FSDP)) == "fsdp"
    assert sharding.sharding_of(fake_accelerator(DistributedType.DEEPSPEED)) == "deepspeed"
    assert sharding.sharding_of(fake_accelerator(DistributedType.MULTI_GPU)) == ""
    assert sharding.sharding_of(fake_accelerator(DistributedType.NO)) == ""


def test_fsdp2_of_a_denoiser_stage_is_accepted(tmp_path):
    sharding.check_sharding(tiny_train_config("text2img", tmp_path), fake_accelerator(DistributedType.FSDP))
    for stage in sharding.SHARDED_STAGES:
        sharding.check_sharding(stage_config(stage), fake_accelerator(DistributedType.FSDP))
    sharding.check_sharding(stage_config("autoencoder"), fake_accelerator(DistributedType.MULTI_GPU))


def test_what_fsdp_cannot_train_is_refused(tmp_path):
    fsdp = fake_accelerator(DistributedType.FSDP)
    assert "fsdp_version: 2" in refusal(tiny_train_config("text2img", tmp_path), fake_accelerator(DistributedType.FSDP, version=1))
    for stage in ("autoencoder", "clip"):
        assert f"stage {stage} does not train under FSDP" in refusal(stage_config(stage), fsdp)
    with_tokens = SimpleNamespace(stage="lora", lora=SimpleNamespace(tokens=["wndml"]), train=SimpleNamespace(compile=False))
    assert "lora.tokens" in refusal(with_tokens, fsdp)
    offloaded = fake_accelerator(DistributedType.FSDP, offload=CPUOffloadPolicy())
    assert "fsdp_offload_params" in refusal(tiny_train_config("text2img", tmp_path), offloaded)
    assert "train.compile" in refusal(tiny_train_config("text2img", tmp_path, compile=True), fsdp)


def test_deepspeed_is_refused_installed_or_not(tmp_path, monkeypatch):
    config = tiny_train_config("text2img", tmp_path)
    deepspeed = fake_accelerator(DistributedType.DEEPSPEED)
    monkeypatch.setattr(sharding.importlib.util, "find_spec", lambda name: None)
    assert "DeepSpeed, which is not installed" in refusal(config, deepspeed)
    monkeypatch.setattr(sharding.importlib.util, "find_spec", lambda name: object())
    assert "DeepSpeed is not supported" in refusal(config, deepspeed)


def test_ldm_train_refuses_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "make_accelerator", lambda *args: fake_accelerator(DistributedType.DEEPSPEED))
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(write_config(tmp_path))])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "DeepSpeed" in lines[0], lines
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()


def test_an_unknown_gradient_norm_does_not_skip_the_step():
    assert sharding.grad_norm_is_finite(None)  # DeepSpeed's before it has one
    assert sharding.grad_norm_is_finite(torch.tensor(3.0))
    assert not sharding.grad_norm_is_finite(torch.tensor(float("nan")))


def test_optimizer_state_by_name_and_back_is_torchs_layout():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    names = [name for name, _ in model.named_parameters()]
    saved = optimizer.state_dict()
    named = fsdp_state.by_name(saved, names)
    assert set(named["state"]) == set(names) and named["param_groups"][0]["params"] == names
    assert fsdp_state.by_position(named, names) == saved
