"""Stage `upscaler`: a super-resolution U-Net trained on pairs made per step (crop, downscale by
the VAE's factor, degradations); the noised low-resolution picture and its noise level reach
the U-Net; resume and processes see the same pairs; the export is an upscaler model folder."""

import pytest
import torch
import yaml
from PIL import Image

from configs import tiny_train_dict
from test_cli_train import assert_one_line_error, train_main
from tiny import build_tiny
from tiny_data import tiny_datasets, tiny_image_folder

from ldm.config import ConfigError, from_dict
from ldm.training.config import TrainConfig
from ldm.training.loop import train

SECTION = {"crop": 16, "blur": [0.0, 1.0], "noise": [0.0, 0.05], "jpeg_quality": [50, 95], "noise_levels": [0, 350]}


def upscaler_dict(tmp_path, section=None, **train_settings) -> dict:
    data = tiny_train_dict("upscaler", tmp_path / "run", **train_settings)
    data["upscaler"] = dict(SECTION if section is None else section)
    return data


def upscaler_config(tmp_path, section=None, **train_settings) -> TrainConfig:
    return from_dict(TrainConfig, upscaler_dict(tmp_path, section, **train_settings))


def test_trains_and_exports_an_upscaler_with_a_validation_grid(tmp_path):
    from ldm.formats.model_folder import load_model, read_model_config

    config = upscaler_config(tmp_path, max_steps=3, ema_decay=0.5)
    config.validation.prompts = ["red over blue", "green over red"]
    config.validation.steps = 2
    result = train(config, open_dataset=tiny_datasets())
    assert result.step == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    model = read_model_config(result.export_path)
    assert model.upscaler is not None and model.upscaler.max_noise_level == 350
    assert model.denoiser.in_channels == 7 and model.denoiser.num_class_embeds == 351
    components = load_model(result.export_path)
    assert components.config.upscaler == model.upscaler and components.denoiser.config.num_class_embeds == 351
    # Rows of low-resolution (shown at the truth's size) | upscaled | truth, at the 16 px crop.
    grid = Image.open(tmp_path / "run" / "samples" / "step-000003.png")
    assert grid.size == (3 * 16, 2 * 16)


def test_the_noised_low_res_picture_and_its_noise_level_reach_the_unet(tmp_path, monkeypatch):
    from ldm.training.upscaler_stage import UpscalerModule

    seen = []
    predict = UpscalerModule.predict

    def watched(self, noisy, timesteps, cond, batch, randomness):
        def hook(module, args, kwargs):
            seen.append((args[0].shape, kwargs["class_labels"].clone(), cond.concat.clone(), batch["low_res"].clone()))

        handle = self.denoiser.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            return predict(self, noisy, timesteps, cond, batch, randomness)
        finally:
            handle.remove()

    monkeypatch.setattr(UpscalerModule, "predict", watched)
    section = {**SECTION, "noise_levels": [100, 120]}
    train(upscaler_config(tmp_path, section, max_steps=2), open_dataset=tiny_datasets())
    assert len(seen) == 2
    for shape, labels, concat, low in seen:
        assert shape == (2, 7, 8, 8)  # 4 latent channels + 3 picture channels, at the 16 px crop's latents (f2)
        assert labels.dtype == torch.long and ((labels >= 100) & (labels <= 120)).all()
        assert concat.shape == low.shape == (2, 3, 8, 8) and not torch.equal(concat, low)  # noised


def test_resume_continues_as_if_never_stopped(tmp_path):
    from ldm.training.checkpoints import resolve_checkpoint

    straight = train(upscaler_config(tmp_path / "a", max_steps=4), open_dataset=tiny_datasets())
    train(upscaler_config(tmp_path / "b", max_steps=2), open_dataset=tiny_datasets())
    resumed = train(
        upscaler_config(tmp_path / "b", max_steps=4),
        resume=resolve_checkpoint("latest", tmp_path / "b" / "run"),
        open_dataset=tiny_datasets(),
    )
    assert resumed.losses == straight.losses[2:]


def test_two_processes_make_the_pairs_one_process_makes(tmp_path):
    from ldm.training.batches import Randomness
    from ldm.training.stages import StageContext
    from ldm.training.upscaler_stage import UpscalerStage

    config = upscaler_config(tmp_path)
    context = StageContext(config, torch.device("cpu"), tmp_path / "run", tiny_datasets())
    module = UpscalerStage(context).module
    batch = {"pixels": torch.stack([tiny_datasets()("train")[i]["pixels"] for i in range(4)]), "caption": ["a"] * 4}
    cond = torch.zeros(4, 77, 32)

    def made(rows, rank, world):
        from ldm.diffusion.conditioning import Conditioning

        randomness = Randomness(7, 3, 0, rank, world)
        pairs = module.pairs({"pixels": batch["pixels"][rows]}, randomness)
        noisy = torch.zeros(len(cond[rows]), 4, 8, 8)
        conditioned = module.image_conditions(Conditioning(cond[rows]), noisy, pairs, randomness)
        return pairs["pixels"], conditioned.concat, conditioned.vectors["noise_level"]

    whole = made(slice(0, 4), 0, 1)
    halves = [made(slice(2 * r, 2 * r + 2), r, 2) for r in (0, 1)]
    for i in range(3):
        assert torch.equal(torch.cat([h[i] for h in halves]), whole[i])


def test_latent_cache_keeps_the_low_res_picture_and_trains_as_without(tmp_path):
    images = str(tiny_image_folder(tmp_path / "images", n=4))

    def run(name, section):
        config = upscaler_config(tmp_path / name, section, max_steps=2)
        config.data.path = images
        return train(config)

    section = {**SECTION, "crop": None}
    plain = run("a", section)
    cached = run("b", {**section, "latent_cache": str(tmp_path / "cache")})
    assert list((tmp_path / "cache").iterdir())  # built
    assert cached.losses == pytest.approx(plain.losses, abs=1e-5)
    with pytest.warns(UserWarning, match="latent cache bypassed: upscaler.crop"):
        run("c", {**SECTION, "latent_cache": True})
    assert not (tmp_path / "c" / "run" / "latent_cache").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"crop": 18}, "upscaler.crop must be a multiple of 4"),
        ({"crop": 64}, "upscaler.crop must be in [1, data.resolution 32]"),
        ({"blur": [1.0, 0.5]}, "upscaler.blur must be [low, high]"),
        ({"jpeg_quality": [0, 50]}, "upscaler.jpeg_quality must be [low, high]"),
        ({"noise": [0.0, 2.0]}, "upscaler.noise must be [low, high]"),
        ({"noise_levels": [0, 400]}, "upscaler.noise_levels must stay within model.upscaler.max_noise_level (350)"),
        ({"noise_levels": [5]}, "upscaler.noise_levels must be [low, high]"),
    ],
)
def test_bad_section_values_are_one_line_config_errors(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        upscaler_config(tmp_path, {**SECTION, **change})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_dit_cannot_be_an_upscaler(tmp_path):
    data = tiny_train_dict("upscaler", tmp_path / "run", backbone="dit")
    with pytest.raises(ConfigError, match="stage upscaler trains a U-Net"):
        from_dict(TrainConfig, data)


def test_init_from_a_model_that_is_not_an_upscaler_is_one_line_exit_2(tmp_path):
    from ldm.formats.model_folder import save_model

    # The refusal reads the loaded model's config, whatever its backbone: one U-Net case.
    data = upscaler_dict(tmp_path)
    data["upscaler"]["init_from"] = str(save_model(build_tiny(), tmp_path / "tiny-model"))
    data["data"]["path"] = str(tiny_image_folder(tmp_path / "images", n=4))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(train_main("--config", path), "upscaler.init_from", "is not an upscaler")


def test_fine_tuning_an_upscaler_starts_from_its_weights(tmp_path):
    from ldm.formats.model_folder import read_safetensors

    first = train(upscaler_config(tmp_path / "a", max_steps=1), open_dataset=tiny_datasets())
    section = {**SECTION, "init_from": str(first.export_path)}
    again = train(upscaler_config(tmp_path / "b", section, max_steps=1, lr=1e-12), open_dataset=tiny_datasets())
    a = read_safetensors(first.export_path / "denoiser.safetensors")
    b = read_safetensors(again.export_path / "denoiser.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dry_run_of_the_scenes_upscaler_config():
    from ldm.bundled_configs import resolve_config_path
    from ldm.training.config import load_train_config
    from ldm.training.dry_run import dry_run_report

    report = dry_run_report(load_train_config(resolve_config_path("scenes/upscaler.yaml")))
    assert "unet                 4,003,332  trainable" in report
    assert "latents: 4 x 32 x 32 per image (128 px)" in report
    assert "x4 (32 px low-resolution pictures -> 128 px" in report and "random 128 px crops of 512 px pictures" in report
