"""Checkpoints and resume: same losses and weights as an uninterrupted run; a crash while
writing a checkpoint leaves `latest` loadable; non-finite losses are skipped and counted."""

import pytest
import torch

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.model_folder import read_safetensors
from ldm.training import checkpoints
from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint
from ldm.training.loop import TrainingError, train


def run(output_dir, resume=None, backbone="unet"):
    # 4 samples, global batch 2: 2 batches per epoch, so the runs cross epoch boundaries.
    config = tiny_train_config("text2img", output_dir, backbone, max_steps=5, save_every=3, ema_decay=0.9, warmup_steps=2, lr_schedule="cosine")
    return train(config, resume=resume, open_dataset=tiny_datasets(n=4))


def killed_during_step(monkeypatch, killed_step):
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward

    def dies(self, batch, randomness, step):
        if step == killed_step:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", dies)
    return forward


def test_resume_gives_the_same_losses_and_weights(tmp_path, monkeypatch, backbone):
    from ldm.training.text2img_stage import Text2ImgModule

    whole = run(tmp_path / "whole", backbone=backbone)
    forward = killed_during_step(monkeypatch, 4)  # after the checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", backbone=backbone)
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    second = run(tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"), backbone=backbone)
    assert second.losses == pytest.approx(whole.losses[3:], abs=1e-6)
    a = read_safetensors(tmp_path / "whole" / "model" / "denoiser.safetensors")
    b = read_safetensors(tmp_path / "split" / "model" / "denoiser.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_checkpoint_holds_everything_resume_needs(tmp_path, monkeypatch):
    killed_during_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run")
    state = load_checkpoint(resolve_checkpoint("latest", tmp_path / "run"))
    assert state.step == 3
    assert state.data_position == {"epoch": 1, "batch": 1}  # mid-epoch
    assert state.ema is not None and len(state.ema["shadow_params"]) == len(state.weights)
    assert state.optimizer["state"] and state.lr_scheduler["last_epoch"] == 3
    assert state.rng["torch"].dtype == torch.uint8
    # Only safetensors and JSON: no pickles anywhere.
    files = {p.suffix for p in (tmp_path / "run" / "checkpoints").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json", ""}


def test_keep_last_prunes_old_checkpoints(tmp_path):
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=3, save_every=1, keep_last=2)
    train(config, open_dataset=tiny_datasets())
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["latest", "step-000002", "step-000003"]


def test_crash_while_writing_a_checkpoint_leaves_latest_loadable(tmp_path, monkeypatch):
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=4, save_every=2)
    written = []
    original = checkpoints.write_safetensors

    def crashing_writer(state, path):
        written.append(path)
        if len(written) > 4:  # the second checkpoint dies after half its files (kill -9)
            raise KeyboardInterrupt("killed")
        original(state, path)

    monkeypatch.setattr(checkpoints, "write_safetensors", crashing_writer)
    with pytest.raises(KeyboardInterrupt):
        train(config, open_dataset=tiny_datasets())
    latest = resolve_checkpoint("latest", tmp_path / "run")
    assert latest.name == "step-000002"
    assert load_checkpoint(latest).step == 2
    monkeypatch.setattr(checkpoints, "write_safetensors", original)
    result = train(config, resume=latest, open_dataset=tiny_datasets())
    assert result.step == 4


def test_non_finite_losses_are_skipped_counted_and_stop_training(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward

    def sometimes_nan(self, batch, randomness, step):
        loss, logs = forward(self, batch, randomness, step)
        return (loss * float("nan"), logs) if step in (1, 3, 4, 5) else (loss, logs)

    monkeypatch.setattr(Text2ImgModule, "forward", sometimes_nan)
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=20, save_every=100, max_bad_steps=3)
    with pytest.raises(TrainingError, match="3 consecutive steps"):
        train(config, open_dataset=tiny_datasets())
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"step": 2, ' in log and '"skipped_steps": 1' in log and '"skipped_steps": 4' in log


def test_skipped_step_leaves_weights_unchanged(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward
    monkeypatch.setattr(Text2ImgModule, "forward", lambda self, *a: (forward(self, *a)[0] * float("inf"), {}))
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=2, save_every=1, max_bad_steps=5)
    result = train(config, open_dataset=tiny_datasets())
    assert result.skipped_steps == 2
    a = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000001" / "weights.safetensors")
    b = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000002" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.isfinite(v).all() for v in b.values())
