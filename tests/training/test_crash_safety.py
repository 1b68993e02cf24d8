"""kill -9 at the dangerous moments of training's writes: the next `ldm-train` start finds a
checkpoint `latest` names and a model, on the branch the user last chose."""

import argparse
import os
import shutil

import pytest
import torch
import yaml

from configs import tiny_train_config, tiny_train_dict
from kill_between_renames import kill_while_saving_again, left_aside, run_until_killed
from tiny_data import tiny_datasets

from ldm.cli.train import preflight
from ldm.formats.model_folder import is_model_folder, load_model, read_safetensors, save_model
from ldm.training.checkpoints import TrainingState, load_checkpoint, resolve_checkpoint, save_checkpoint
from ldm.training.loop import train


def next_start(run_dir, tmp_path, resume="latest"):
    """What `ldm-train --config ... --resume latest` does before training: its checkpoint."""
    config = tmp_path / "config.yaml"
    data = tiny_train_dict("text2img", run_dir)
    data["data"]["path"] = str(tmp_path)  # a folder that is there: preflight checks it
    config.write_text(yaml.safe_dump(data))
    _, checkpoint, lock = preflight(argparse.Namespace(config=str(config), overrides=[], resume=resume, dry_run=False))
    lock.release()  # preflight takes the output folder's lock for the run that would follow
    return checkpoint


def tiny_state(step, value):
    return TrainingState(step=step, weights={"w": torch.full((3,), float(value))}, optimizer={"state": {}, "param_groups": []},
                         lr_scheduler={}, data_position={"epoch": 0, "batch": step})


def test_kill_while_saving_again_the_step_latest_names(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    save_checkpoint(tiny_state(2, 1.0), checkpoints, keep_last=2)
    marker = tmp_path / "stopped"
    run_until_killed(f"""
from pathlib import Path
from kill_between_renames import stop_before_rename_into
from test_crash_safety import tiny_state
from ldm.training.checkpoints import save_checkpoint
stop_before_rename_into(Path({str(checkpoints / "step-000002")!r}), Path({str(marker)!r}))
save_checkpoint(tiny_state(2, 2.0), Path({str(checkpoints)!r}), keep_last=2)
""", marker)
    resumed = next_start(tmp_path / "run", tmp_path)
    assert resumed == checkpoints / "step-000002"
    assert torch.equal(load_checkpoint(resumed).weights["w"], torch.full((3,), 1.0))  # the old one, whole
    assert sorted(os.listdir(checkpoints)) == ["latest", "step-000002"]  # leftovers gone


def short_run(output_dir, max_steps, **train):
    return tiny_train_config("text2img", output_dir, max_steps=max_steps, save_every=2, keep_last=2, **train)


def test_kill_after_resuming_an_older_checkpoint_then_resume_latest(tmp_path):
    run_dir = tmp_path / "run"
    train(short_run(run_dir, 4), open_dataset=tiny_datasets(n=4))
    assert resolve_checkpoint("latest", run_dir).name == "step-000004"
    older = run_dir / "checkpoints" / "step-000002"
    marker = tmp_path / "stopped"
    # The resumed run is killed during its first step, before it saves anything.
    run_until_killed(f"""
from pathlib import Path
from kill_between_renames import stop_here
from configs import tiny_train_config
from tiny_data import tiny_datasets
from test_crash_safety import short_run
from ldm.training.text2img_stage import Text2ImgModule
from ldm.training.loop import train
Text2ImgModule.forward = lambda self, batch, randomness, step: stop_here(Path({str(marker)!r}))
train(short_run(Path({str(run_dir)!r}), 6), resume=Path({str(older)!r}), open_dataset=tiny_datasets(n=4))
""", marker)
    assert next_start(run_dir, tmp_path) == older


def test_resumed_branch_replaces_the_abandoned_one(tmp_path):
    run_dir = tmp_path / "run"
    train(short_run(run_dir, 4), open_dataset=tiny_datasets(n=4))
    abandoned = read_safetensors(run_dir / "checkpoints" / "step-000004" / "weights.safetensors")
    # Another seed (noise draws) from step 2 on: a different branch.
    train(short_run(run_dir, 3, seed=1), resume=run_dir / "checkpoints" / "step-000002", open_dataset=tiny_datasets(n=4))
    # step 3 is the newest of this branch; the abandoned step 4 is spared by pruning, not resumed.
    assert resolve_checkpoint("latest", run_dir).name == "step-000003"
    assert (run_dir / "checkpoints" / "step-000002").is_dir()
    train(short_run(run_dir, 4, seed=1), resume=resolve_checkpoint("latest", run_dir), open_dataset=tiny_datasets(n=4))
    renewed = read_safetensors(run_dir / "checkpoints" / "step-000004" / "weights.safetensors")
    assert resolve_checkpoint("latest", run_dir).name == "step-000004"
    assert any(not torch.equal(abandoned[k], renewed[k]) for k in abandoned)


def test_kill_between_the_renames_of_a_model_re_export(tmp_path, tiny_components):
    model = save_model(tiny_components, tmp_path / "run" / "model")
    marker = tmp_path / "stopped"
    kill_while_saving_again(model, marker)
    next_start(tmp_path / "run", tmp_path, resume=None)
    reloaded = load_model(model)
    saved, reread = tiny_components.denoiser.state_dict(), reloaded.denoiser.state_dict()
    assert all(torch.equal(reread[name], weight) for name, weight in saved.items())
    assert not [name for name in os.listdir(tmp_path / "run") if name.startswith(".")]  # no .model.tmp-* copy left


@pytest.mark.parametrize("kind", ["tmp", "old"])
def test_model_save_recovers_or_removes_leftovers(tmp_path, tiny_components, kind):
    model = save_model(tiny_components, tmp_path / "model")
    leftover = tmp_path / f".model.{kind}-999999999-abcd1234"
    if kind == "old":  # killed between the renames: the model is only at its .old- name
        os.rename(model, leftover)
    else:  # killed while writing a new version
        shutil.copytree(model, leftover)
    save_model(tiny_components, tmp_path / "vae-next-to-it")  # another folder: leaves it alone
    assert leftover.exists()
    save_model(tiny_components, model)
    assert sorted(os.listdir(tmp_path)) == ["model", "vae-next-to-it"]


def test_training_starts_from_an_init_from_model_a_kill_left_aside(tmp_path, tiny_unet_components):
    """Its save was killed between the two renames of the swap: the model sits at .model.old-*."""
    model = save_model(tiny_unet_components, tmp_path / "base" / "model")
    left_aside(model)
    config = tmp_path / "config.yaml"
    data = tiny_train_dict("text2img", tmp_path / "run")
    data["data"]["path"] = str(tmp_path)  # a folder that is there: preflight checks it
    config.write_text(yaml.safe_dump(data))
    preflight(argparse.Namespace(config=str(config), overrides=[f"text2img.init_from={model}"], resume=None, dry_run=False))
    assert is_model_folder(model)


def test_resuming_from_a_checkpoint_a_kill_left_aside(tmp_path):
    """Another run's checkpoint, saved again and killed between the renames: --resume PATH and
    Python's train(resume=PATH) find it."""
    checkpoint = save_checkpoint(tiny_state(2, 1.0), tmp_path / "other" / "checkpoints", keep_last=2)
    left_aside(checkpoint)
    assert next_start(tmp_path / "run", tmp_path, resume=str(checkpoint)) == checkpoint
    left_aside(checkpoint)
    assert torch.equal(load_checkpoint(checkpoint).weights["w"], torch.full((3,), 1.0))
