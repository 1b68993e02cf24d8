"""The denoiser stages' validation grids: every stage draws through the one routine
(ldm.training.validation.sample_grid), whose grid holds the images the stage's pipeline
calls draw, in rows per prompt, saved as OUTPUT/samples/step-NNNNNN.png."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.config import from_dict
from ldm.images import to_pil
from ldm.pipeline import Pipeline
from ldm.training import validation
from ldm.training.config import TrainConfig
from ldm.training.stage_registry import build_stage
from ldm.training.stages import StageContext

PROMPTS = ["red over blue", "green"]
SIDE = 32  # the tiny models' image size
# Each stage's grid (columns, rows) for the two prompts: text2img one image per prompt in one
# row; a row per prompt of inpaint's held-out image and its inpainting, controlnet's map, steered,
# plain and overlay, lcm's 1, 2, 4 and 8 steps, lora's image without and with it.
GRIDS = {"text2img": (2, 1), "inpaint": (2, 2), "controlnet": (4, 2), "lcm": (4, 2), "lora": (2, 2)}
SECTIONS = {"controlnet": {"control_type": "raw"}, "lcm": {"guidance_embedding": 32}}


@pytest.fixture
def backbone() -> str:
    """ControlNet and LCM build on a U-Net; one backbone is enough to show the routine."""
    return "unet"


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the stages start from it): one folder per session."""
    return shared_tiny_model_dir


def stage_for(tmp_path: Path, stage: str, init_from: Path, prompts=PROMPTS, opened=None):
    data = tiny_train_dict(stage, tmp_path / "run")
    data[stage] = {"init_from": str(init_from), **SECTIONS.get(stage, {})}
    data["validation"] = {"prompts": prompts, "steps": 2}
    datasets = tiny_datasets()

    def open_dataset(split: str):
        if opened is not None:
            opened.append(split)
        return datasets(split)

    return build_stage(StageContext(from_dict(TrainConfig, data), torch.device("cpu"), tmp_path / "run", open_dataset))


def evaluated_grid(stage, step: int = 7) -> Image.Image:
    with torch.no_grad():
        assert stage.evaluate(step) == {}
    return Image.open(stage.context.output_dir / "samples" / f"step-{step:06d}.png")


def tiles(grid: Image.Image) -> list[bytes]:
    """The grid's tiles, row-major, as raw pixels."""
    return [
        grid.crop((x, y, x + SIDE, y + SIDE)).tobytes()
        for y in range(0, grid.height, SIDE)
        for x in range(0, grid.width, SIDE)
    ]


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_denoiser_stage_draws_through_the_one_routine(tmp_path, tiny_model_dir, monkeypatch, name):
    built = []

    class CountedPipeline(Pipeline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(validation, "Pipeline", CountedPipeline)
    stage = stage_for(tmp_path, name, tiny_model_dir)
    grid = evaluated_grid(stage)
    assert len(built) == 1  # the routine's pipeline, none of the stage's own
    assert grid.size == (GRIDS[name][0] * SIDE, GRIDS[name][1] * SIDE)
    trained = stage.controlnet if name == "controlnet" else stage.components.denoiser
    assert trained.training  # back in training mode
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step-000007.png"]


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_without_prompts_nothing_is_drawn_nor_read(tmp_path, tiny_model_dir, name):
    opened = []
    stage = stage_for(tmp_path, name, tiny_model_dir, prompts=[], opened=opened)
    opened.clear()  # what building the stage read
    assert stage.evaluate(3) == {}
    assert opened == [] and not (tmp_path / "run" / "samples").exists()


def test_text2img_tiles_are_the_pipelines_images_for_the_validation_settings(tmp_path, tiny_model_dir):
    stage = stage_for(tmp_path, "text2img", tiny_model_dir)
    grid = evaluated_grid(stage)
    settings = stage.config.validation
    pipeline = Pipeline(stage.components)
    expected = [
        pipeline.generate(p, steps=settings.steps, cfg=settings.cfg, sampler=settings.sampler, seed=settings.seed, progress=False).images[0]
        for p in PROMPTS
    ]
    assert tiles(grid) == [image.tobytes() for image in expected]


def test_lcm_rows_are_the_student_at_1_2_4_and_8_steps(tmp_path, tiny_model_dir):
    stage = stage_for(tmp_path, "lcm", tiny_model_dir)
    grid = evaluated_grid(stage)
    pipeline, seed = Pipeline(stage.components), stage.config.validation.seed
    expected = [
        pipeline.generate(p, steps=n, cfg=stage.config.validation.cfg, sampler="lcm", seed=seed, progress=False).images[0]
        for p in PROMPTS
        for n in (1, 2, 4, 8)
    ]
    assert tiles(grid) == [image.tobytes() for image in expected]


def test_inpaint_rows_start_with_the_held_out_images(tmp_path, tiny_model_dir):
    stage = stage_for(tmp_path, "inpaint", tiny_model_dir)
    grid = evaluated_grid(stage)
    held_out = tiny_datasets()("validation")
    assert tiles(grid)[0::2] == [to_pil(held_out[i]["pixels"][None])[0].tobytes() for i in range(len(PROMPTS))]


def test_lora_rows_show_the_base_model_then_the_lora_and_leave_it_on(tmp_path, tiny_model_dir):
    stage = stage_for(tmp_path, "lora", tiny_model_dir)
    with torch.no_grad():
        for p in stage.components.denoiser.parameters():
            if p.requires_grad:  # the adapters: B starts at zero, so move it
                p.add_(0.1)
    grid = evaluated_grid(stage)
    settings = stage.config.validation
    options = dict(steps=settings.steps, cfg=settings.cfg, sampler=settings.sampler, seed=settings.seed, progress=False)
    with_lora = [Pipeline(stage.components).generate(p, **options).images[0].tobytes() for p in PROMPTS]
    base = Pipeline.load(tiny_model_dir)
    without = [base.generate(p, **options).images[0].tobytes() for p in PROMPTS]
    assert tiles(grid) == [without[0], with_lora[0], without[1], with_lora[1]]
    assert without != with_lora
