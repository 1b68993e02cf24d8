"""Stage `inpaint`: a text2img model folder becomes a 9-channel inpainting model that
starts exactly where the text2img model was, trains on random masks, and loads in ldm-inpaint."""

import copy

import pytest
import torch
import yaml

from configs import tiny_train_dict
from test_cli_train import assert_one_line_error, train_main
from tiny_data import tiny_datasets

from ldm.config import from_dict
from ldm.training.config import TrainConfig
from ldm.training.loop import train
from ldm.training.random_masks import MASK_KINDS, draw_kinds, random_masks


def inpaint_config(tmp_path, init_from, **train_settings):
    data = tiny_train_dict("inpaint", tmp_path / "run", **train_settings)
    data["inpaint"] = {"init_from": str(init_from)}
    return from_dict(TrainConfig, data)


# ----------------------------------------------------------------------------- the widened denoiser


def test_widened_denoiser_at_step_zero_is_the_text2img_denoiser(tiny_components):
    from ldm.diffusion.conditioning import Conditioning
    from ldm.diffusion.denoiser import denoise_call
    from ldm.diffusion.backbones import backbone_of
    from ldm.training.inpaint_stage import widen_to_inpainting

    denoiser = tiny_components.denoiser
    wide = copy.deepcopy(denoiser)
    widen_to_inpainting(wide, latent_channels=4)
    owner, name = backbone_of(wide).input_conv()
    assert wide.config.in_channels == 9 and getattr(owner, name).in_channels == 9
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    context = torch.randn(2, 77, 32, generator=g)
    timesteps = torch.tensor([10, 900])
    with torch.no_grad():
        expected = denoise_call(denoiser, latents, timesteps, Conditioning(context))
        for extra in (torch.zeros(2, 5, 16, 16), 100 * torch.randn(2, 5, 16, 16, generator=g)):
            got = denoise_call(wide, latents, timesteps, Conditioning(context, concat=extra))
            assert torch.equal(got, expected)


# ----------------------------------------------------------------------------- random masks


def test_every_mask_kind_appears_and_looks_like_itself():
    g = torch.Generator().manual_seed(0)
    probabilities = {"box": 1.0, "brush": 1.0, "full": 1.0, "none": 1.0}
    assert set(draw_kinds(64, probabilities, g)) == set(MASK_KINDS)
    for kind in MASK_KINDS:
        masks = random_masks(8, 32, 48, {kind: 1.0}, torch.Generator().manual_seed(1))
        assert masks.shape == (8, 1, 32, 48) and masks.dtype == torch.float32
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        covered = masks.mean(dim=(1, 2, 3))  # (8,) share repainted
        if kind == "full":
            assert (covered == 1).all()
        elif kind == "none":
            assert (covered == 0).all()
        else:
            assert ((covered > 0) & (covered < 1)).all(), (kind, covered)
            assert len(set(covered.tolist())) > 1  # not the same mask every time


def test_masks_follow_the_seed():
    kinds = {"box": 0.4, "brush": 0.4, "full": 0.1, "none": 0.1}
    first = random_masks(16, 32, 32, kinds, torch.Generator().manual_seed(3))
    again = random_masks(16, 32, 32, kinds, torch.Generator().manual_seed(3))
    other = random_masks(16, 32, 32, kinds, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_bad_mask_kinds_are_config_errors(tmp_path):
    from ldm.config import ConfigError

    data = tiny_train_dict("inpaint", tmp_path / "run")
    data["inpaint"] = {"init_from": "x", "mask_kinds": {"circle": 1.0}}
    with pytest.raises(ConfigError, match="inpaint.mask_kinds.*circle"):
        from_dict(TrainConfig, data)
    data["inpaint"]["mask_kinds"] = {"box": 0.0}
    with pytest.raises(ConfigError, match="inpaint.mask_kinds"):
        from_dict(TrainConfig, data)


# ----------------------------------------------------------------------------- the stage


def test_few_steps_export_an_inpainting_model_that_ldm_inpaint_runs(tmp_path, tiny_model_dir, photo, square_mask, backbone):
    from ldm.formats.model_folder import read_model_config, read_safetensors
    from ldm.cli import inpaint
    from ldm.pipeline import Pipeline

    config = inpaint_config(tmp_path, tiny_model_dir, max_steps=3, ema_decay=0.5)
    config.validation.prompts = ["red over blue"]
    config.validation.steps = 2
    result = train(config, open_dataset=tiny_datasets())
    assert result.step == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    folder = result.export_path
    assert read_model_config(folder).denoiser.in_channels == 9
    assert Pipeline.load(folder).is_inpainting_model
    # Training reached the new input channels (mask + masked latents) and kept the old ones.
    conv = {"unet": "conv_in.weight", "dit": "pos_embed.proj.weight"}[backbone]
    weight = read_safetensors(folder / "denoiser.safetensors")[conv]  # (out, 9, k, k)
    assert weight[:, 4:].abs().sum() > 0
    assert (tmp_path / "run" / "samples" / "step-000003.png").is_file()

    photo.save(tmp_path / "photo.png")
    square_mask.save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    argv = ["a cat", "--model", str(folder), "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
            "--steps", "2", "--seed", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert inpaint.main(argv) == 0
    from PIL import Image

    assert Image.open(out).size == (32, 32)


def test_resume_continues_as_if_never_stopped(tmp_path, tiny_model_dir):
    # The widened denoiser and the per-step masks are rebuilt identically on resume.
    from ldm.training.checkpoints import resolve_checkpoint

    straight = train(inpaint_config(tmp_path / "a", tiny_model_dir, max_steps=4), open_dataset=tiny_datasets())
    train(inpaint_config(tmp_path / "b", tiny_model_dir, max_steps=2), open_dataset=tiny_datasets())
    resumed = train(
        inpaint_config(tmp_path / "b", tiny_model_dir, max_steps=4),
        resume=resolve_checkpoint("latest", tmp_path / "b" / "run"),
        open_dataset=tiny_datasets(),
    )
    assert resumed.losses == straight.losses[2:]


def test_init_from_that_is_not_a_model_folder(tmp_path):
    from ldm.formats.model_folder import ModelError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="inpaint.init_from: .*not a model folder"):
        train(inpaint_config(tmp_path, tmp_path / "empty"), open_dataset=tiny_datasets())


def test_ldm_train_without_init_from_is_one_line_exit_2(tmp_path):
    data = tiny_train_dict("inpaint", tmp_path / "run")
    data["data"]["path"] = str(tmp_path)  # there: the paths are checked first
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(train_main("--config", path), "inpaint.init_from is required")
    assert_one_line_error(train_main("--config", path, f"inpaint.init_from={tmp_path}/nope"), "inpaint.init_from", "not found")
