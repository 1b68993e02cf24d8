"""The lora and controlnet stages on an SDXL model (init_from an SDXL diffusers folder): the
size conditioning reaches the U-Net and the ControlNet, a run resumes exactly, and what it
writes (a LoRA file, a ControlNet folder) draws with the model in ldm-generate."""

import pytest
import torch
from configs import tiny_train_dict
from PIL import Image
from sdxl_folder import write_tiny_sdxl_folder
from test_sdxl_training import sized_datasets

from ldm.config import from_dict
from ldm.formats.model_folder import read_safetensors
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.config import TrainConfig
from ldm.training.loop import train

SECTIONS = {"lora": {}, "controlnet": {"control_type": "raw"}}


def run(stage: str, folder, output_dir, resume=None):
    data = tiny_train_dict(stage, output_dir, max_steps=4, save_every=2)
    data[stage] = {"init_from": str(folder), **SECTIONS[stage]}
    return train(from_dict(TrainConfig, data), resume=resume, open_dataset=sized_datasets)


def exported_weights(stage: str, output_dir) -> dict:
    if stage == "lora":
        return read_safetensors(output_dir / "lora.safetensors")
    return read_safetensors(output_dir / "controlnet" / "raw" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("stage", ["lora", "controlnet"])
def test_an_sdxl_model_trains_resumes_and_draws_with_the_result(tmp_path, monkeypatch, stage):
    from ldm.cli.generate import main
    from ldm.training.text2img_stage import Text2ImgModule

    folder = write_tiny_sdxl_folder(tmp_path)
    whole = run(stage, folder, tmp_path / "whole")
    forward = Text2ImgModule.forward

    def dies(self, batch, randomness, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        run(stage, folder, tmp_path / "split")
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    second = run(stage, folder, tmp_path / "split", resume=resolve_checkpoint("latest", tmp_path / "split"))
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    a, b = exported_weights(stage, tmp_path / "whole"), exported_weights(stage, tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)

    base = ["red over blue", "--model", str(folder), "--steps", "2", "--width", "32", "--height", "32", "--seed", "3", "--quiet"]
    if stage == "lora":
        given = ["--lora", str(tmp_path / "whole" / "lora.safetensors")]
    else:
        Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "control.png")
        given = ["--control", str(tmp_path / "control.png"), "--control-type", "raw", "--controlnet", str(tmp_path / "whole" / "controlnet" / "raw")]
    assert main([*base, *given, "--out", str(tmp_path / "with.png")]) == 0
    assert main([*base, "--out", str(tmp_path / "without.png")]) == 0
    drawn = [torch.tensor(list(Image.open(tmp_path / f"{name}.png").getdata()), dtype=torch.float) for name in ("with", "without")]
    assert drawn[0].shape == drawn[1].shape and not torch.equal(*drawn)  # the trained part changes the picture
