"""Stage `controlnet` on an MMDiT model (model.denoiser.kind: mmdit): an SD3 ControlNet made
from the MMDiT's first joint blocks starts as the base model exactly, trains only itself,
resumes exactly, and exports a folder that generation loads and draws with."""

import pytest
import torch
from PIL import Image
from tiny_data import TinyImages, tiny_datasets

from configs import tiny_train_dict
from ldm.config import from_dict
from ldm.formats.model_folder import read_safetensors
from ldm.training.config import TrainConfig
from ldm.training.loop import train

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def mmdit_model_dir(saved_tiny_models):
    return saved_tiny_models("mmdit")


def controlnet_config(tmp_path, init_from, max_steps=3, **settings):
    data = tiny_train_dict("controlnet", tmp_path / "run", max_steps=max_steps, **settings)
    data["controlnet"] = {"init_from": str(init_from), "control_type": "canny"}
    return from_dict(TrainConfig, data)


def test_at_step_zero_the_output_is_the_base_mmdits_exactly(tmp_path, mmdit_model_dir):
    from ldm.diffusion.denoiser import denoise_call
    from ldm.training.batches import Randomness
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    stage = build_stage(StageContext(controlnet_config(tmp_path, mmdit_model_dir), torch.device("cpu"), tmp_path, tiny_datasets()))
    module = stage.module
    assert type(stage.controlnet).__name__ == "SD3ControlNetModel" and stage.controlnet.config.num_layers == 1
    batch = {key: [TinyImages()[i][key] for i in range(2)] for key in ("pixels", "caption", "key")}
    batch["pixels"] = torch.stack(batch["pixels"])
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([5, 800])
    with torch.no_grad():
        cond = module.encode(list(batch["caption"]))
        controlled = module.predict(latents, timesteps, cond, batch, Randomness(0, 0, 0))
        base = denoise_call(module.denoiser, latents, timesteps, cond)
    assert torch.equal(controlled, base)
    assert {name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad} == {"controlnet"}


def test_an_mmdit_controlnet_trains_resumes_exactly_and_draws(tmp_path, mmdit_model_dir):
    from ldm.control.units import ControlUnit
    from ldm.pipeline import Pipeline
    from ldm.training.checkpoints import resolve_checkpoint

    straight = train(controlnet_config(tmp_path / "a", mmdit_model_dir, max_steps=4), open_dataset=tiny_datasets())
    train(controlnet_config(tmp_path / "b", mmdit_model_dir, max_steps=2), open_dataset=tiny_datasets())
    resumed = train(controlnet_config(tmp_path / "b", mmdit_model_dir, max_steps=4), open_dataset=tiny_datasets(),
                    resume=resolve_checkpoint("latest", tmp_path / "b" / "run"))  # fmt: skip
    assert resumed.losses == straight.losses[2:]
    a, b = (read_safetensors(result.export_path / WEIGHTS) for result in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pipe = Pipeline.load(mmdit_model_dir, controlnets=(straight.export_path,))
    unit = ControlUnit(Image.new("RGB", (32, 32), "white"), "raw", 2.0)
    options = dict(steps=2, seed=1, progress=False)
    steered, plain = pipe.generate("red", controls=(unit,), **options), pipe.generate("red", **options)
    assert steered.parameters[0].fields()["ControlNet 0"].startswith("Module: none, Model: canny, Weight: 2,")
    assert steered.images[0].tobytes() != plain.images[0].tobytes()  # four steps moved the zero-initialised parts


def test_a_dit_model_is_refused_in_one_line(tmp_path, saved_tiny_models):
    from ldm.config import ConfigError

    with pytest.raises(ConfigError, match="ControlNets steer U-Net and MMDiT models; this model's denoiser is a DiT"):
        train(controlnet_config(tmp_path, saved_tiny_models("dit")), open_dataset=tiny_datasets())
