"""Masked loss (kohya's masked_loss): an all-white mask is the plain loss exactly; a half mask
counts only its white half (what the black half predicts does not matter); masks are sidecars
(NAME.mask.png, never images themselves) or KEY.png in data.mask_dir, resized when their size
differs, and cropped as their pictures were, to the square or to an aspect-ratio bucket; bad
settings and unreadable masks are one line."""

import numpy as np
import pytest
import torch
from PIL import Image
from marked_pictures import MARKED, bucketed_sample, marked, marked_folder, marked_share
from tiny_data import TinyImages, tiny_datasets, tiny_image_folder

from configs import tiny_train_dict
from ldm.config import ConfigError, from_dict
from ldm.data.errors import DataError
from ldm.data.imagefolder import folder_files
from ldm.training.batches import Randomness
from ldm.training.config import TrainConfig
from ldm.training.loop import train
from ldm.training.loss_masks import LossMasks
from ldm.training.stage_registry import build_stage
from ldm.training.size_conditioning import picture_sizes
from ldm.training.stages import StageContext


@pytest.fixture
def tiny_model_dir(saved_tiny_models):
    """Only read here: the U-Net's folder."""
    return saved_tiny_models("unet")


def masked_config(tmp_path, init_from, stage="text2img", **data):
    settings = tiny_train_dict(stage, tmp_path / "run")
    settings["data"].update({"caption_dropout": 0.0, "masked_loss": True, **data})
    settings[stage] = {"init_from": str(init_from)}
    return from_dict(TrainConfig, settings)


def half_mask(size=32) -> Image.Image:
    """White (counts) on the left, black on the right."""
    array = np.zeros((size, size), np.uint8)
    array[:, : size // 2] = 255
    return Image.fromarray(array)


def batch_of(keys):
    images = TinyImages(len(keys))
    samples = [images[i] for i in range(len(keys))]
    return {"pixels": torch.stack([s["pixels"] for s in samples]), "caption": [s["caption"] for s in samples], "key": keys}


def losses(stage, batch, masks):
    stage.module.loss_masks = masks
    with torch.no_grad():
        return stage.module.batch_losses(batch, Randomness(0, 1, 0))  # (B,)


def test_an_all_white_mask_is_the_plain_loss_and_a_half_mask_counts_its_half(tmp_path, tiny_model_dir):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (32, 32), 255).save(masks / "white.png")
    half_mask().save(masks / "half.png")
    config = masked_config(tmp_path, tiny_model_dir, mask_dir=str(masks))
    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / "out", tiny_datasets()))
    stage.module.eval()
    batch = batch_of(["white.jpg", "unmasked.jpg", "half.jpg"])
    from_config = stage.module.loss_masks
    plain = losses(stage, batch, None)
    masked = losses(stage, batch, from_config)
    assert torch.equal(masked[:2], plain[:2])  # all white, and no mask at all: the plain loss
    assert masked[2] < plain[2] * 0.9

    # Only the white half counts: its loss is the plain loss of that half, the other half's errors weigh 0.
    prediction, target = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    weights = LossMasks(masks, None)(["half.jpg"], (32, 32), (16, 16))
    assert torch.equal(weights[0, 0, :, :8], torch.ones(16, 8)) and torch.equal(weights[0, 0, :, 8:], torch.zeros(16, 8))
    timesteps = torch.tensor([10])
    loss = stage.module.sample_losses(prediction, target, timesteps, weights)
    expected = ((prediction - target)[..., :8] ** 2).sum() / prediction.numel()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    prediction[..., 8:] += 5.0
    assert torch.equal(stage.module.sample_losses(prediction, target, timesteps, weights), loss)


def test_a_mask_of_another_size_is_resized_and_transparency_is_black(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    half_mask(32).save(masks / "small.png")
    half_mask(96).save(masks / "large.png")
    rgba = Image.new("RGBA", (32, 32), (255, 255, 255, 255))
    rgba.paste((255, 255, 255, 0), (16, 0, 32, 32))  # right half transparent
    rgba.save(masks / "layer.png")
    weights = LossMasks(masks, None)(["small.png", "large.png", "layer.png"], (32, 32), (16, 16))
    assert torch.allclose(weights[1], weights[0], atol=0.06)  # resampling softens the edge only
    assert torch.equal(weights[2], weights[0])


def test_sidecar_masks_train_through_an_image_folder_and_are_not_images(tmp_path, tiny_model_dir):
    folder = tiny_image_folder(tmp_path / "images", n=4)
    half_mask().save(folder / "00001.mask.png")
    files, _ = folder_files(str(folder))
    assert files == ["00000.png", "00001.png", "00002.png", "00003.png"]
    masks = LossMasks.of(masked_config(tmp_path, tiny_model_dir, path=str(folder)).data)
    weights = masks(["00000.png", "00001.png"], (32, 32), (16, 16))
    assert torch.equal(weights[0], torch.ones(1, 16, 16)) and weights[1].sum() == 16 * 8
    config = masked_config(tmp_path, tiny_model_dir, path=str(folder))
    config.train.max_steps = 1
    assert train(config).step == 1


def test_an_unreadable_mask_is_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="loss mask .*broken.png is not an image"):
        LossMasks(tmp_path, None)(["broken.jpg"], (32, 32), (16, 16))


@pytest.mark.parametrize(("stage", "data", "message"), [
    ("text2img", {"masked_loss": False, "mask_dir": "masks"}, "data.mask_dir is set but data.masked_loss is false"),
    ("inpaint", {}, "data.masked_loss is for stages text2img and lora, not inpaint"),
    ("text2img", {"crop": "random"}, "needs data.crop: center and data.random_flip: false"),
    ("text2img", {"source": "webdataset"}, "with data.source webdataset needs data.mask_dir"),
])  # fmt: skip
def test_bad_masked_loss_settings_are_config_errors(tmp_path, stage, data, message):
    with pytest.raises(ConfigError, match=message):
        masked_config(tmp_path, "model", stage, **data)


@pytest.mark.parametrize("size", list(MARKED))
def test_a_bucketed_mask_is_cropped_as_its_picture(tmp_path, size):
    """A wide and a tall picture in their buckets: the mask's marked pixels are the picture's."""
    folder = marked_folder(tmp_path / "images", size)
    marked(size, MARKED[size], "L").save(folder / "00000.mask.png")
    (tmp_path / "masks").mkdir()
    marked(size, MARKED[size], "L", scale=2).save(tmp_path / "masks" / "00000.png")  # twice the picture's size
    batch = bucketed_sample(folder)
    height, width = batch["pixels"].shape[-2:]
    expected = marked_share(batch["pixels"][0])
    sidecar = LossMasks(None, folder)(batch["key"], (height, width), (height, width), picture_sizes(batch, 1))
    assert torch.allclose(sidecar[0, 0], expected, atol=1e-5)
    resized = LossMasks(tmp_path / "masks", None)(batch["key"], (height, width), (height, width), picture_sizes(batch, 1))
    assert torch.equal(resized[0, 0] > 0.5, expected > 0.5)


def test_masked_loss_trains_in_buckets(tmp_path, tiny_model_dir):
    folder = marked_folder(tmp_path / "images", (96, 64))
    marked((96, 64), MARKED[(96, 64)], "L").save(folder / "00000.mask.png")
    config = masked_config(tmp_path, tiny_model_dir, path=str(folder), buckets=True)
    config.train.max_steps, config.train.batch_size = 1, 1
    assert train(config).step == 1
