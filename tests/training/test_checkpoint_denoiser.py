"""load_denoiser_from_checkpoint (tools/evaluate.py --checkpoint): a run judged at any of its
checkpoints gets the weights its export would have held (the EMA ones), and a checkpoint of
another model is a one-line CheckpointError."""

from pathlib import Path

import pytest
import torch

from configs import tiny_train_config
from tiny_data import tiny_image_folder

from ldm.formats.model_folder import load_model
from ldm.training.checkpoints import CheckpointError, checkpoint_name, load_denoiser_from_checkpoint
from ldm.training.loop import train


def tiny_run(output_dir: Path, images: Path, **settings):
    config = tiny_train_config("text2img", str(output_dir), max_steps=3, save_every=3, **settings)
    config.data.path = str(images)
    train(config)
    return output_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("data") / "images", 4)


@pytest.mark.parametrize("ema_decay", [0.9, None])
def test_the_last_checkpoint_gives_the_exported_denoiser(tmp_path, images, ema_decay):
    run = tiny_run(tmp_path / "run", images, ema_decay=ema_decay)
    exported = load_model(run / "model").denoiser
    fresh = load_model(run / "model").denoiser
    with torch.no_grad():
        for parameter in fresh.parameters():
            parameter.zero_()
    which = load_denoiser_from_checkpoint(run / "checkpoints" / checkpoint_name(3), fresh)
    assert which == ("ema" if ema_decay else "trained")
    for (name, a), b in zip(exported.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_model_is_refused(tmp_path, images):
    run = tiny_run(tmp_path / "run", images, ema_decay=0.9)
    other = load_model(run / "model").denoiser
    other.conv_in = torch.nn.Conv2d(4, 8, 3)  # a different layout: parameters change shape
    with pytest.raises(CheckpointError, match="conv_in.weight"):
        load_denoiser_from_checkpoint(run / "checkpoints" / checkpoint_name(3), other)
