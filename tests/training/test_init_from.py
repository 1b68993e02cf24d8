"""init_from, one definition for every denoiser stage: the shared config section, one required
check and one loader whose errors are one line naming the stage's key; and the stage's own
declaration of DDP's unused parameters, which the loop reads."""

import dataclasses

import pytest
import torch
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.cli.train_paths import MODEL_KEYS
from ldm.config import ConfigError, from_dict
from ldm.formats.model_folder import ModelError
from ldm.training import loop
from ldm.training.clip_stage import ClipStage
from ldm.training.config import STAGE_NAMES, DenoiserSection, TrainConfig
from ldm.training.speedups import COMPILED_STAGES
from ldm.training.stage_registry import STAGES, build_stage
from ldm.training.stages import StageContext

DENOISER_STAGES = ("text2img", "inpaint", "controlnet", "lcm", "lora", "upscaler")
OPTIONAL = ("text2img", "upscaler")  # stages that may build their model from `model`
SECTIONS = {"controlnet": {"control_type": "raw"}, "lcm": {"guidance_embedding": 32}}


def config_for(tmp_path, stage: str, **section):
    data = tiny_train_dict(stage, tmp_path / "run")
    data[stage] = {**SECTIONS.get(stage, {}), **section}
    return from_dict(TrainConfig, data)


def test_the_denoiser_stages_are_those_with_an_init_from_section():
    config = TrainConfig()
    with_init_from = {name for name in STAGE_NAMES if isinstance(getattr(config, name), DenoiserSection)}
    assert with_init_from == set(DENOISER_STAGES) == set(MODEL_KEYS) == set(COMPILED_STAGES)
    for name in DENOISER_STAGES:  # init_from is a key users write, first in each section
        assert dataclasses.fields(getattr(config, name))[0].name == "init_from"
    assert tuple(name for name in DENOISER_STAGES if getattr(config, name).init_from_required is None) == OPTIONAL


@pytest.mark.parametrize("stage", [s for s in DENOISER_STAGES if s not in OPTIONAL])
def test_a_missing_init_from_is_one_line_naming_the_key(tmp_path, stage):
    with pytest.raises(ConfigError) as error:
        config_for(tmp_path, stage)
    assert str(error.value).startswith(f"{stage}.init_from is required: ") and "\n" not in str(error.value)
    config_for(tmp_path, "text2img")  # text2img may build its model from `model`


@pytest.mark.parametrize("stage", DENOISER_STAGES)
def test_a_folder_that_is_no_model_is_one_line_naming_the_key(tmp_path, stage):
    (tmp_path / "empty").mkdir()
    config = config_for(tmp_path, stage, init_from=str(tmp_path / "empty"))
    with pytest.raises(ModelError) as error:
        build_stage(StageContext(config, torch.device("cpu"), tmp_path / "run", tiny_datasets()))
    message = str(error.value)
    assert message.startswith(f"{stage}.init_from: ") and "not a model folder" in message and "\n" not in message


def test_the_loop_asks_ddp_for_unused_parameters_as_the_stage_declares(tmp_path, monkeypatch):
    assert [name for name, stage in STAGES.items() if stage.find_unused_parameters] == ["autoencoder"]
    asked = []
    original = loop.make_accelerator

    def spy(config, output_dir, find_unused_parameters=False):
        asked.append(find_unused_parameters)
        return original(config, output_dir, find_unused_parameters)

    monkeypatch.setattr(loop, "make_accelerator", spy)
    monkeypatch.setattr(ClipStage, "find_unused_parameters", True)
    loop.train(from_dict(TrainConfig, tiny_train_dict("clip", tmp_path / "run", max_steps=1)), open_dataset=tiny_datasets())
    assert asked == [True]
