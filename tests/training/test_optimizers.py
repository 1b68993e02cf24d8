"""train.optimizer: Adafactor trains and resumes exactly as AdamW does; 8-bit AdamW is refused
in one line where it cannot run; the dry run's optimizer row is what the optimizer keeps."""

import pytest
import torch
from torch import nn

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.config import ConfigError
from ldm.training import optimizers
from ldm.training.checkpoints import CheckpointError, resolve_checkpoint
from ldm.training.dry_run import dry_run_report
from ldm.training.loop import train
from ldm.training.optimizers import build_optimizer, check_optimizer, state_bytes


def stepped(name: str) -> tuple[torch.optim.Optimizer, list[torch.Size]]:
    """An optimizer of `name` after one step on a matrix, a convolution and a bias."""
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(5))
    module(torch.randn(2, 3, 6, 6)).square().mean().backward()
    parameters = list(module.parameters())
    settings = tiny_train_config("text2img", "unused", optimizer=name).train
    optimizer = build_optimizer(settings, parameters)
    optimizer.step()
    return optimizer, [p.shape for p in parameters]


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_the_dry_runs_state_bytes_are_what_the_optimizer_keeps(name):
    optimizer, shapes = stepped(name)
    kept = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t) and t.dim() > 0)  # fmt: skip
    assert kept == state_bytes(name, shapes)
    if name == "adafactor":  # factored: the 5 x 288 matrix keeps 5 + 288 numbers, not 1,440
        assert kept < state_bytes("adamw", shapes) / 4


def run(output_dir, resume=None, **settings):
    config = tiny_train_config("text2img", output_dir, **{"max_steps": 4, "save_every": 2, "lr": 1e-3, **settings})
    return train(config, open_dataset=tiny_datasets(), resume=resume)


def test_adafactor_trains_and_resumes_exactly(tmp_path):
    whole = run(tmp_path / "whole", optimizer="adafactor", max_steps=4)
    assert whole.losses != run(tmp_path / "adamw", max_steps=4).losses  # another optimizer, other steps
    run(tmp_path / "split", optimizer="adafactor", max_steps=2)
    second = run(tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"), optimizer="adafactor")
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)


def test_resuming_with_another_optimizer_is_one_line(tmp_path):
    run(tmp_path / "run", max_steps=2)
    with pytest.raises(CheckpointError, match=r"^checkpoint .*: its optimizer state does not fit train.optimizer adafactor"):
        run(tmp_path / "run", resume=resolve_checkpoint("latest", tmp_path / "run"), optimizer="adafactor")


def test_8bit_adamw_needs_bitsandbytes_and_a_gpu(monkeypatch):
    monkeypatch.setattr(optimizers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="^train.optimizer adamw8bit needs bitsandbytes"):
        check_optimizer("adamw8bit")
    monkeypatch.setattr(optimizers.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ConfigError, match="^train.optimizer adamw8bit runs on CUDA GPUs; this run is on cpu"):
        check_optimizer("adamw8bit", torch.device("cpu"))
    check_optimizer("adafactor", torch.device("cpu"))


def test_the_dry_run_shows_each_optimizers_memory(tmp_path):
    rows = {}
    for name in ("adamw", "adamw8bit", "adafactor"):
        report = dry_run_report(tiny_train_config("text2img", tmp_path / "run", optimizer=name))
        (rows[name],) = [line for line in report.splitlines() if line.strip().startswith("optimizer (")]
    assert "AdamW, 2 fp32 states" in rows["adamw"] and "8-bit" in rows["adamw8bit"] and "Adafactor" in rows["adafactor"]
    with pytest.raises(ConfigError, match="train.optimizer is 'sgd'; expected one of adamw, adamw8bit, adafactor"):
        tiny_train_config("text2img", tmp_path / "run", optimizer="sgd")


def test_a_checkpoint_from_another_torch_version_still_resumes(tmp_path, monkeypatch):
    """A setting torch added since the checkpoint was written is not "another optimizer"."""
    from ldm.training import loop

    run(tmp_path / "run", max_steps=2)
    load = loop.load_checkpoint

    def older_torch(path):
        state = load(path)
        for group in state.optimizer["param_groups"]:
            group.pop("decoupled_weight_decay", None), group.pop("differentiable", None)
        return state

    monkeypatch.setattr(loop, "load_checkpoint", older_torch)
    assert len(run(tmp_path / "run", resume=resolve_checkpoint("latest", tmp_path / "run")).losses) == 2
