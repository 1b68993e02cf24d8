"""The lcm stage on an SDXL teacher (an SDXL diffusers folder): the teacher and the student read
the batch's size ids, the teacher's unconditional side is zeros (what sampling gives an empty
negative prompt there), a run resumes exactly, and the export (the folder with the student's
U-Net) draws with --sampler lcm."""

import pytest
import torch
from configs import tiny_train_dict
from PIL import Image
from sdxl_folder import write_tiny_sdxl_folder
from test_sdxl_training import captured_time_ids, sized_datasets

from ldm.config import from_dict
from ldm.formats.model_folder import load_model
from ldm.training.batches import Randomness
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig
from ldm.training.loop import train


def config(folder, output_dir, **settings) -> TrainConfig:
    data = tiny_train_dict("lcm", output_dir, **settings)
    data["lcm"] = {"init_from": str(folder), "guidance_embedding": 32}
    return from_dict(TrainConfig, data)


def run(folder, output_dir, resume=None):
    return train(config(folder, output_dir, max_steps=4, save_every=2), resume=resume, open_dataset=sized_datasets)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl-lcm"))


def test_the_sdxl_student_reads_the_sizes_and_the_teacher_zeros_for_uncond(folder, tmp_path):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    stage = build_stage(StageContext(config(folder, tmp_path / "run"), torch.device("cpu"), tmp_path / "run", sized_datasets))
    given = {"pixels": torch.zeros(2, 3, 32, 32), "caption": ["red", "blue"], "original_size": torch.tensor([[600, 400], [32, 90]]),
             "crop_top_left": torch.tensor([[5, 7], [0, 11]])}  # fmt: skip
    assert captured_time_ids(stage, given).tolist() == [[600, 400, 5, 7, 32, 32], [32, 90, 0, 11, 32, 32]]
    uncond = stage.module.unconditional(2)
    assert uncond.tokens.abs().sum() == 0 and uncond.pooled.abs().sum() == 0
    loss, _ = stage.module(given, Randomness(0, 0, 0), 0)
    assert torch.isfinite(loss)


def test_distilled_resumed_exported_and_drawn_with_lcm(folder, tmp_path, monkeypatch):
    from ldm.cli.generate import main
    from ldm.training.lcm_stage import LcmModule

    whole = run(folder, tmp_path / "whole")
    forward = LcmModule.forward

    def dies(self, batch, randomness, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(LcmModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        run(folder, tmp_path / "split")
    monkeypatch.setattr(LcmModule, "forward", forward)
    second = run(folder, tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)

    model = tmp_path / "whole" / "model"
    student = load_model(model)
    assert student.denoiser.config.time_cond_proj_dim == 32 and len(student.text_encoders) == 2
    out = tmp_path / "lcm.png"
    argv = ["red over blue", "--model", str(model), "--sampler", "lcm", "--steps", "2", "--cfg", "4", "--width", "32", "--height", "32",
            "--seed", "2", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert Image.open(out).size == (32, 32)
