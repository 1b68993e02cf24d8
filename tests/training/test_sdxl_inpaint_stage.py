"""The inpaint stage on an SDXL model (init_from an SDXL diffusers folder): the U-Net grows to
9 input channels and reads the batch's size conditioning, a run resumes exactly, and the
export (the folder with its U-Net replaced) is an SDXL inpainting model that diffusers'
StableDiffusionXLInpaintPipeline loads and ldm-inpaint draws with."""

import pytest
import torch
from configs import tiny_train_dict
from PIL import Image
from sdxl_folder import write_tiny_sdxl_folder
from test_sdxl_training import captured_time_ids, sized_datasets

from ldm.config import from_dict
from ldm.formats.model_folder import load_model
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig
from ldm.training.loop import train


def config(folder, output_dir, **settings) -> TrainConfig:
    data = tiny_train_dict("inpaint", output_dir, **settings)
    data["inpaint"] = {"init_from": str(folder)}
    return from_dict(TrainConfig, data)


def run(folder, output_dir, resume=None):
    return train(config(folder, output_dir, max_steps=4, save_every=2), resume=resume, open_dataset=sized_datasets)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl-inpaint"))


def test_the_widened_sdxl_unet_reads_the_batch_sizes(folder, tmp_path):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    stage = build_stage(StageContext(config(folder, tmp_path / "run"), torch.device("cpu"), tmp_path / "run", sized_datasets))
    assert stage.components.denoiser.config.in_channels == 9
    given = {"pixels": torch.zeros(2, 3, 32, 32), "caption": ["red", "blue"], "original_size": torch.tensor([[600, 400], [32, 90]]),
             "crop_top_left": torch.tensor([[5, 7], [0, 11]])}  # fmt: skip
    assert captured_time_ids(stage, given).tolist() == [[600, 400, 5, 7, 32, 32], [32, 90, 0, 11, 32, 32]]


def test_trained_resumed_exported_and_inpainted_with(folder, tmp_path, monkeypatch):
    from diffusers import StableDiffusionXLInpaintPipeline

    from ldm.cli.inpaint import main
    from ldm.training.inpaint_stage import InpaintModule

    whole = run(folder, tmp_path / "whole")
    forward = InpaintModule.forward

    def dies(self, batch, randomness, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(InpaintModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        run(folder, tmp_path / "split")
    monkeypatch.setattr(InpaintModule, "forward", forward)
    second = run(folder, tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)

    exports = [load_model(tmp_path / name / "model") for name in ("whole", "split")]
    a, b = (components.denoiser.state_dict() for components in exports)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert exports[0].denoiser.config.in_channels == 9 and len(exports[0].text_encoders) == 2
    assert a["conv_in.weight"][:, 4:].abs().sum() > 0  # training reached the mask and masked-latent channels
    theirs = StableDiffusionXLInpaintPipeline.from_pretrained(tmp_path / "whole" / "model", local_files_only=True, use_safetensors=True)
    assert torch.equal(theirs.unet.state_dict()["conv_in.weight"], a["conv_in.weight"])

    Image.new("RGB", (32, 32), (20, 120, 200)).save(tmp_path / "photo.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    argv = ["a red circle", "--model", str(tmp_path / "whole" / "model"), "--image", str(tmp_path / "photo.png"),
            "--mask", str(tmp_path / "mask.png"), "--steps", "2", "--seed", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert Image.open(out).size == (32, 32)
