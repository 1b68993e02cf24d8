"""--dry-run's figures: the SD-scale configs build (on the meta device) to the published
parameter counts, and the activation / FLOP measurement matches a hand count."""

import pytest
import torch
from torch import nn

from ldm.bundled_configs import resolve_config_path
from ldm.training.config import load_train_config
from ldm.training.dry_run import dry_run_report, measure_activations


def meta_count(build) -> int:
    with torch.device("meta"):
        module = build()
    assert next(module.parameters()).is_meta
    return sum(p.numel() for p in module.parameters())


def test_sd_scale_configs_match_the_published_parameter_counts():
    import open_clip

    from ldm.models.autoencoder import build_vae
    from ldm.models.text_encoder import build_text_encoder
    from ldm.models.components import build_denoiser

    text2img = load_train_config(resolve_config_path("text2img.yaml")).model
    autoencoder = load_train_config(resolve_config_path("autoencoder.yaml")).model
    assert meta_count(lambda: build_denoiser(text2img, 1024)) == 865_910_724  # SD 2.x U-Net
    assert meta_count(lambda: build_vae(autoencoder.vae)) == 83_653_863  # KL-f8 VAE
    assert meta_count(lambda: build_vae(text2img.vae)) == 83_653_863
    # ViT-H-14's text tower as open_clip itself builds it (its CLIP minus the image tower).
    clip = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
    expected = sum(p.numel() for k, p in clip.named_parameters() if not k.startswith(("visual.", "logit_")))
    assert meta_count(lambda: build_text_encoder(text2img.text_encoder).tower) == expected


def test_activations_and_flops_of_a_small_network_match_a_hand_count():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.zeros(2, 8)
    measured = measure_activations(lambda: net(x), net, units=())
    assert measured.elements == 2 * 16 + 2 * 16 + 2 * 4  # every leaf's output
    assert measured.forward_flops == 2 * (2 * 8 * 16) + 2 * (2 * 16 * 4)  # a multiply-add is 2 FLOPs


def test_checkpointing_keeps_block_outputs_and_the_largest_block():
    block = lambda: nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 4))  # noqa: E731
    net = nn.Sequential(block(), block(), nn.Linear(4, 4))
    measured = measure_activations(lambda: net(torch.zeros(1, 4)), net, units=(type(net[0]),))
    # Sequential is also the root's type: only the outermost units count, never the root itself.
    assert measured.elements == 2 * (32 + 32 + 4) + 4
    # Kept: the last layer's output, both blocks' outputs, and one block's inside while recomputed.
    assert measured.checkpointed_elements == 4 + 2 * 4 + (32 + 32 + 4)


@pytest.mark.parametrize("name", ["cpu/autoencoder.yaml", "cpu/clip.yaml", "cpu/text2img.yaml", "cpu/inpaint.yaml"])
def test_dry_run_describes_every_stage(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = dry_run_report(load_train_config(resolve_config_path(name)))
    assert "trainable" in report and "GFLOP per optimizer step" in report and "MISSING" in report
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["cpu/controlnet.yaml", "cpu/lcm.yaml"])
def test_a_stage_without_an_estimate_is_a_one_line_error(name, tmp_path, monkeypatch, capsys):
    from ldm.cli.train import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["--config", name, "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ldm-train: error: --dry-run does not estimate stage ") and "\n" not in err


def test_the_dry_run_shows_the_processes_and_the_global_batch(tmp_path):
    from ldm.training.process_count import planned_processes

    config = load_train_config(resolve_config_path("cpu/autoencoder.yaml"), ["train.grad_accum=3"])
    report = dry_run_report(config, planned_processes(8))
    batch = config.train.batch_size
    assert f"processes (GPUs): 8 (--num-processes); global batch {batch * 3 * 8} = {batch} per device x 3 accumulation steps x 8" in report
    accelerate_config = tmp_path / "default_config.yaml"
    accelerate_config.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    assert planned_processes(None, {"WORLD_SIZE": "2"}, accelerate_config) == (2, "WORLD_SIZE")
    assert planned_processes(None, {}, accelerate_config) == (4, f"num_processes in {accelerate_config}")
    assert planned_processes(None, {}, tmp_path / "none.yaml").count == 1
