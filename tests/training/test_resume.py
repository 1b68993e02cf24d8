"""Checkpoints and resume, on the path ldm-train takes (an image folder on disk, read by
ldm.data through make_batches): same losses, weights and log as an uninterrupted run; a
crash while writing a checkpoint leaves `latest` loadable; non-finite losses are skipped
and counted."""

import json
from pathlib import Path

import pytest
import torch

from configs import tiny_train_config
from tiny_data import tiny_image_folder

from ldm.formats.model_folder import read_safetensors
from ldm.training import checkpoints
from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint
from ldm.training.loop import TrainingError, train


def on_disk(config, n: int = 8):
    """`config` reading n tiny images from a folder next to its output folder."""
    folder = Path(config.train.output_dir + "-images")
    config.data.path = str(folder if folder.is_dir() else tiny_image_folder(folder, n))
    return config


def run(output_dir, resume=None, backbone="unet", exclude=None, **settings):
    # 4 samples, global batch 2: 2 batches per epoch, so the runs cross epoch boundaries.
    settings = {"max_steps": 5, "save_every": 3, "ema_decay": 0.9, "warmup_steps": 2, "lr_schedule": "cosine", **settings}
    config = tiny_train_config("text2img", output_dir, backbone, **settings)
    if exclude is not None:  # 6 images, 2 of them listed: 4 samples again
        config.data.exclude = str(exclude)
        return train(on_disk(config, n=6), resume=resume)
    return train(on_disk(config, n=4), resume=resume)


def logged_steps(output_dir) -> list[int]:
    rows = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def tensorboard_steps(output_dir, tag="loss") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / "logs" / "train"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


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


def test_resume_with_an_exclusion_list_gives_the_same_losses(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    listed = tmp_path / "exclude.txt"
    listed.write_text("00001.png\n00004.png\n")
    whole = run(tmp_path / "whole", exclude=listed)
    forward = killed_during_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", exclude=listed)
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    second = run(tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"), exclude=listed)
    assert second.losses == pytest.approx(whole.losses[3:], abs=1e-6)
    assert whole.data.skipped == {"excluded": 2}


def test_a_resumed_run_logs_each_step_once(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    run(tmp_path / "whole")
    forward = killed_during_step(monkeypatch, 4)  # steps 1-4 logged, checkpoint at 3
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split")
    assert logged_steps(tmp_path / "split") == [1, 2, 3, 4]
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    run(tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert logged_steps(tmp_path / "split") == logged_steps(tmp_path / "whole") == [1, 2, 3, 4, 5]
    assert tensorboard_steps(tmp_path / "split") == tensorboard_steps(tmp_path / "whole") == [1, 2, 3, 4, 5]


def test_resume_from_an_older_checkpoint_cuts_the_log_there(tmp_path):
    run(tmp_path / "run", save_every=2, keep_last=3)
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    (tmp_path / "run" / "log.jsonl").write_text("\n".join(lines) + '\n{"step": 9, "lo')  # a row cut by a kill
    run(tmp_path / "run", resume=tmp_path / "run" / "checkpoints" / "step-000002")
    assert logged_steps(tmp_path / "run") == [1, 2, 3, 4, 5]
    assert not list((tmp_path / "run").glob(".log.jsonl*"))


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
    train(on_disk(config))
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
        train(on_disk(config))
    latest = resolve_checkpoint("latest", tmp_path / "run")
    assert latest.name == "step-000002"
    assert load_checkpoint(latest).step == 2
    monkeypatch.setattr(checkpoints, "write_safetensors", original)
    result = train(config, resume=latest)
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
        train(on_disk(config))
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"step": 2, ' in log and '"skipped_steps": 1' in log and '"skipped_steps": 4' in log


def test_skipped_step_leaves_weights_unchanged(tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward
    monkeypatch.setattr(Text2ImgModule, "forward", lambda self, *a: (forward(self, *a)[0] * float("inf"), {}))
    config = tiny_train_config("text2img", tmp_path / "run", max_steps=2, save_every=1, max_bad_steps=5)
    result = train(on_disk(config))
    assert result.skipped_steps == 2
    a = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000001" / "weights.safetensors")
    b = read_safetensors(tmp_path / "run" / "checkpoints" / "step-000002" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.isfinite(v).all() for v in b.values())


def test_resume_decodes_only_the_images_it_trains_on(tmp_path, monkeypatch):
    from ldm.data import indexed
    from ldm.training.text2img_stage import Text2ImgModule

    forward = killed_during_step(monkeypatch, 3)  # 4 images, batch 2: checkpoint at step 2, an epoch read
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", save_every=2)
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    decoded = []
    original = indexed.decode_image
    monkeypatch.setattr(indexed, "decode_image", lambda source, min_size: decoded.append(source) or original(source, min_size=min_size))
    run(tmp_path / "run", resume=resolve_checkpoint("latest", tmp_path / "run"), save_every=2)
    assert len(decoded) == 3 * 2  # steps 3, 4 and 5; not the 4 images of steps 1 and 2


def test_resume_takes_a_new_learning_rate_and_ema_decay_from_the_config(tmp_path, capfd):
    """A checkpoint brings back its schedule; `train.lr=... --resume latest` must still change
    the rate (scaled by the schedule where it is), and the EMA decay likewise, and say so."""
    from ldm.training import loop

    run(tmp_path / "run", max_steps=3, lr=1e-3, lr_schedule="constant", log_every=1)
    captured = {}
    original = loop.apply_resumed_settings

    def spy(settings, optimizer, lr_scheduler, ema):
        message = original(settings, optimizer, lr_scheduler, ema)
        captured.update(lr=optimizer.param_groups[0]["lr"], decay=ema.decay)
        return message

    loop.apply_resumed_settings = spy
    try:
        run(tmp_path / "run", resume=resolve_checkpoint("latest", tmp_path / "run"), max_steps=5, lr=4e-3, ema_decay=0.5,
            lr_schedule="constant", log_every=1)  # fmt: skip
    finally:
        loop.apply_resumed_settings = original
    assert captured == {"lr": pytest.approx(4e-3), "decay": 0.5}
    assert "resuming with the config's train.lr 0.001 -> 0.004, train.ema_decay 0.9 -> 0.5" in capfd.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"step"' in line]
    assert [row["lr"] for row in rows if row["step"] > 3 and "lr" in row] == [pytest.approx(4e-3)] * 2
