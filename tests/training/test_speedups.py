"""train.channels_last and train.compile: the same training in a faster form. Channels-last
gives the contiguous run's losses and an exported model that loads; its resume is exact;
compile compiles the denoiser stages' parts, in place (parameter names unchanged)."""

import pytest
import torch
from test_resume import killed_during_step, run

from configs import tiny_train_config
from ldm.config import ConfigError
from ldm.formats.model_folder import load_model
from ldm.training.checkpoints import resolve_checkpoint


def test_channels_last_trains_as_the_contiguous_run_and_resumes_exactly(tmp_path, monkeypatch, backbone):
    from ldm.training.text2img_stage import Text2ImgModule

    plain = run(tmp_path / "plain", backbone=backbone)
    nhwc = run(tmp_path / "nhwc", backbone=backbone, channels_last=True)
    assert nhwc.losses == pytest.approx(plain.losses, rel=1e-4)
    exported = load_model(nhwc.export_path)  # contiguous tensors were written
    reference = load_model(plain.export_path)
    for (name, a), b in zip(exported.denoiser.state_dict().items(), reference.denoiser.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name

    forward = killed_during_step(monkeypatch, 4)  # after the checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", backbone=backbone, channels_last=True)
    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    resumed = run(tmp_path / "cut", resolve_checkpoint("latest", tmp_path / "cut"), backbone=backbone, channels_last=True)
    assert resumed.losses == pytest.approx(nhwc.losses[3:], abs=1e-6)


def test_compile_compiles_the_denoiser_in_place(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    result = run(tmp_path / "run", compile=True, max_steps=1)
    assert compiled == ["UNet2DConditionModel"] and result.step == 1


def test_compile_is_for_the_denoiser_stages(tmp_path):
    with pytest.raises(ConfigError, match="train.compile compiles the denoiser: stages text2img, .*, not autoencoder"):
        tiny_train_config("autoencoder", tmp_path, compile=True)


@pytest.mark.parametrize("backbone", ["unet"])  # ControlNets copy a U-Net
def test_a_channels_last_controlnet_exports_a_folder_that_loads(tmp_path, tiny_model_dir):
    """diffusers' save_pretrained writes the ControlNet's channels-last weights."""
    from test_controlnet_stage import controlnet_config
    from tiny_data import tiny_datasets

    from ldm.control.model import load_controlnet
    from ldm.training.loop import train

    result = train(controlnet_config(tmp_path, tiny_model_dir, max_steps=2, channels_last=True), open_dataset=tiny_datasets())
    assert load_controlnet(result.export_path) is not None
