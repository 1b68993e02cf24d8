"""Prior preservation (DreamBooth's): the loss is the data's + weight x the class images', as an
independent computation with diffusers' scheduler and the bare U-Net gives it; class images are
drawn once by the base model and kept (a rerun draws only the missing, the same pixels); the
class images each step trains on follow from the step alone (exact resume, N processes); bad
settings are one line."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from tiny_data import TinyImages, tiny_datasets

from configs import tiny_train_dict
from ldm.config import ConfigError, from_dict
from ldm.data.errors import DataError
from ldm.images import from_pil, to_pil
from ldm.training.batches import Randomness
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig
from ldm.training.loop import train
from ldm.training.prior import ClassSamples
from ldm.training.stage_registry import build_stage
from ldm.training.stages import StageContext


@pytest.fixture
def tiny_model_dir(saved_tiny_models):
    """Only read here; the prior's loss is the denoiser's whatever it is: the U-Net's folder."""
    return saved_tiny_models("unet")


def prior_config(tmp_path, stage, init_from, prior, **train_settings):
    data = tiny_train_dict(stage, tmp_path / "run", **train_settings)
    data["data"]["caption_dropout"] = 0.0
    data[stage] = {"init_from": str(init_from), **({"rank": 2} if stage == "lora" else {})}
    data["prior"] = prior
    return from_dict(TrainConfig, data)


def class_folder(folder, n=1):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        to_pil(TinyImages(n, 32, offset=500)[i]["pixels"][None])[0].save(folder / f"c{i}.png")
    return folder


class Recorded(Randomness):
    """The draws, in order, for the independent computation."""

    def __init__(self, *args):
        super().__init__(*args)
        self.draws = []

    def randn(self, shape):
        self.draws.append(super().randn(shape))
        return self.draws[-1]

    def rand(self, shape):
        self.draws.append(super().rand(shape))
        return self.draws[-1]

    def randint(self, high, shape):
        self.draws.append(super().randint(high, shape))
        return self.draws[-1]


def reference_loss(components, pixels, captions, draws):
    """diffusers' way: encode, add_noise, the U-Net's eps prediction, MSE against the noise."""
    posterior_noise, _keep, noise, timesteps = draws
    vae, scheduler = components.vae, DDPMScheduler.from_config(components.scheduler_config)
    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        latents = (posterior.mean + posterior.std * posterior_noise) * vae.config.scaling_factor
        tokens = components.conditioner(captions, torch.device("cpu")).tokens
        prediction = components.denoiser(scheduler.add_noise(latents, noise, timesteps), timesteps, encoder_hidden_states=tokens).sample
    return F.mse_loss(prediction, noise)


def test_the_loss_is_the_data_loss_plus_weight_times_the_class_loss(tmp_path, tiny_model_dir):
    classes = class_folder(tmp_path / "classes")
    config = prior_config(tmp_path, "text2img", tiny_model_dir, {"class_prompt": "a red thing", "class_data": str(classes), "weight": 0.7})
    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / "out", tiny_datasets()))
    images = TinyImages(2)
    batch = {"pixels": torch.stack([images[0]["pixels"], images[1]["pixels"]]), "caption": [images[0]["caption"], images[1]["caption"]], "key": ["a", "b"]}
    randomness = Recorded(0, 3, 0)
    stage.module.eval()
    with torch.no_grad():
        loss, logs = stage.module(batch, randomness, 3)
    assert len(randomness.draws) == 8  # posterior noise, caption dropout, noise, timesteps; twice
    instance = reference_loss(stage.components, batch["pixels"], batch["caption"], randomness.draws[:4])
    class_pixels = from_pil([Image.open(classes / "c0.png").convert("RGB")] * 2)
    class_loss = reference_loss(stage.components, class_pixels, ["a red thing"] * 2, randomness.draws[4:])
    assert float(logs["instance_loss"]) == pytest.approx(float(instance), rel=1e-5)
    assert float(logs["class_loss"]) == pytest.approx(float(class_loss), rel=1e-5)
    assert float(loss) == pytest.approx(float(instance + 0.7 * class_loss), rel=1e-5)
    assert float(class_loss) != pytest.approx(float(instance), rel=1e-3)


def test_class_images_walk_seeded_epochs_the_same_for_any_number_of_processes():
    files = [f"c{i}" for i in range(3)]
    one = ClassSamples.__new__(ClassSamples)
    one.files, one.seed, one.batch_size, one.grad_accum = files, 5, 2, 1
    walked = [i for step in range(3) for i in one.indices(step, 0, 0, 1, 2)]
    assert sorted(walked[:3]) == sorted(walked[3:]) == [0, 1, 2]  # each epoch uses every image once
    two = ClassSamples.__new__(ClassSamples)
    two.files, two.seed, two.batch_size, two.grad_accum = files, 5, 1, 1
    halves = [i for step in range(3) for rank in (0, 1) for i in two.indices(step, 0, rank, 2, 1)]
    assert halves == walked


def test_class_images_are_drawn_once_and_a_rerun_draws_only_the_missing(tmp_path, tiny_model_dir, monkeypatch):
    from ldm.pipeline import Pipeline

    prior = {"class_prompt": "a thing", "num_class_images": 3, "steps": 2}
    config = prior_config(tmp_path, "lora", tiny_model_dir, prior, max_steps=2)
    train(config, open_dataset=tiny_datasets())
    folder = tmp_path / "run" / "class_images"
    drawn = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(drawn) == ["00000.png", "00001.png", "00002.png"]
    (folder / "00001.png").unlink()
    calls = []
    generate = Pipeline.generate
    monkeypatch.setattr(Pipeline, "generate", lambda self, *a, **k: calls.append(k["seed"]) or generate(self, *a, **k))
    config = prior_config(tmp_path, "lora", tiny_model_dir, prior, max_steps=3)
    train(config, resume=resolve_checkpoint("latest", tmp_path / "run"), open_dataset=tiny_datasets())
    assert calls == [1]  # image 1's seed; the others kept
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == drawn


def test_resume_with_prior_preservation_is_exact(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    prior = {"class_prompt": "a thing", "num_class_images": 3, "steps": 2, "weight": 0.5}
    whole = train(prior_config(tmp_path / "whole", "lora", tiny_model_dir, prior, max_steps=4, lr=1e-2), open_dataset=tiny_datasets())
    train(prior_config(tmp_path / "split", "lora", tiny_model_dir, prior, max_steps=2, lr=1e-2), open_dataset=tiny_datasets())
    second = train(
        prior_config(tmp_path / "split", "lora", tiny_model_dir, prior, max_steps=4, lr=1e-2),
        resume=resolve_checkpoint("latest", tmp_path / "split" / "run"), open_dataset=tiny_datasets(),
    )  # fmt: skip
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    a, b = (load_file(str(path / "run" / "lora.safetensors")) for path in (tmp_path / "whole", tmp_path / "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_prior_settings_are_one_line(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="prior.class_prompt is empty"):
        prior_config(tmp_path, "lora", tiny_model_dir, {"class_data": str(tmp_path)})
    with pytest.raises(ConfigError, match="for stages text2img and lora, not inpaint"):
        prior_config(tmp_path, "inpaint", tiny_model_dir, {"class_prompt": "a thing"})
    with pytest.raises(ConfigError, match="prior.weight must not be negative"):
        prior_config(tmp_path, "lora", tiny_model_dir, {"class_prompt": "a thing", "weight": -1})
    data = tiny_train_dict("text2img", tmp_path / "run")
    data["prior"] = {"class_prompt": "a thing"}
    with pytest.raises(ConfigError, match="set prior.class_data, or text2img.init_from"):
        from_dict(TrainConfig, data)
    config = prior_config(tmp_path, "lora", tiny_model_dir, {"class_prompt": "a thing", "class_data": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="prior.class_data does not exist"):
        build_stage(StageContext(config, torch.device("cpu"), tmp_path / "out", tiny_datasets()))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    config = prior_config(tmp_path, "lora", tiny_model_dir, {"class_prompt": "a thing", "class_data": str(tmp_path / "broken")})
    with pytest.raises(DataError, match="is missing or not an image"):
        build_stage(StageContext(config, torch.device("cpu"), tmp_path / "out", tiny_datasets()))


def test_ldm_train_says_a_missing_class_folder_in_one_line(tmp_path, tiny_model_dir):
    import yaml
    from in_process import run_in_process
    from tiny_data import tiny_image_folder

    from ldm.cli.train import main

    data = tiny_train_dict("lora", tmp_path / "run")
    data["data"]["path"] = str(tiny_image_folder(tmp_path / "images", n=2))
    data["lora"] = {"init_from": str(tiny_model_dir)}
    data["prior"] = {"class_prompt": "a thing", "class_data": str(tmp_path / "nowhere")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    result = run_in_process("ldm-train", main, "--config", tmp_path / "config.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"ldm-train: error: prior.class_data does not exist: {tmp_path / 'nowhere'}"]
    assert not (tmp_path / "run" / "checkpoints").exists()
