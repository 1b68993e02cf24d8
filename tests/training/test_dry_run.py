"""--dry-run's figures: the SD-scale configs build (on the meta device) to the published
parameter counts; the activations (what autograd saves, measured on a fake GPU) match hand
counts and a real CPU step within 5%; the training state is divided as each sharding does."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from ldm.bundled_configs import resolve_config_path
from ldm.models.autoencoder import build_vae, from_vae_latents, to_vae_latents
from ldm.training.config import load_train_config
from ldm.training.activation_estimate import SavedTensors, measure_saved_tensors
from ldm.training.dry_run import PLANS, dry_run_report, estimate
from ldm.training.memory_table import OPTIMIZER_ROWS, StateSizes, state_rows
from ldm.training.shard_plan import Sharding, planned_sharding


def meta_count(build) -> int:
    with torch.device("meta"):
        module = build()
    assert next(module.parameters()).is_meta
    return sum(p.numel() for p in module.parameters())


def test_sd_scale_configs_match_the_published_parameter_counts():
    import open_clip

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


def test_the_sd3_medium_config_builds_sd3_mediums_mmdit():
    """2,028,328,000 parameters, as diffusers' SD3Transformer2DModel with SD3-medium's published
    shape has them, trained with SD3's flow objective."""
    from diffusers import SD3Transformer2DModel

    from ldm.models.components import build_denoiser

    model = load_train_config(resolve_config_path("sd3-medium.yaml")).model
    ours = meta_count(lambda: build_denoiser(model, model.text_encoder.width))
    published = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
                     num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                     pooled_projection_dim=2048, pos_embed_max_size=192)  # fmt: skip
    assert ours == meta_count(lambda: SD3Transformer2DModel(**published)) == 2_028_328_000
    scheduler = model.scheduler
    assert (scheduler.prediction_type, scheduler.timestep_sampling, scheduler.shift) == ("flow", "logit_normal", 3.0)
    assert model.vae.latent_channels == 16 and model.text_encoder.embed_dim == model.denoiser.pooled_projection_dim
    # SD3's VAE shifts its latents before scaling; the built autoencoder carries both, as SD3 folders' does.
    vae = build_vae(dataclasses.replace(model.vae, block_out_channels=[8, 8], norm_num_groups=4, sample_size=16))
    assert (vae.config.shift_factor, vae.config.scaling_factor) == (0.0609, 1.5305)
    latents = torch.randn(1, 16, 4, 4)
    assert torch.allclose(to_vae_latents(vae, latents), latents / 1.5305 + 0.0609)
    assert torch.allclose(from_vae_latents(vae, to_vae_latents(vae, latents)), latents, atol=1e-6)


def test_saved_tensors_and_flops_of_a_small_network_match_a_hand_count():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.zeros(2, 8)
    measured = measure_saved_tensors(lambda: net(x), net)
    # Saved: the first Linear's input (for its weight's gradient) and ReLU's output, which the
    # second Linear saves too (one storage, counted once); the weights are not activations.
    assert measured.total_bytes == 4 * (2 * 8 + 2 * 16)
    assert measured.bytes_by_dtype == {"float32": 4 * (2 * 8 + 2 * 16)}
    assert measured.forward_flops == 2 * (2 * 8 * 16) + 2 * (2 * 16 * 4)  # a multiply-add is 2 FLOPs


class Blocks(nn.Module):
    """Two blocks and a last layer, checkpointed as diffusers' models are: each block call goes
    through `_gradient_checkpointing_func(block, *args)` when gradient checkpointing is on."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 4)) for _ in range(2))
        self.last = nn.Linear(4, 4)
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self, func):
        self.gradient_checkpointing, self._gradient_checkpointing_func = True, func

    def disable_gradient_checkpointing(self):
        self.gradient_checkpointing = False

    def forward(self, x):
        for block in self.blocks:
            x = self._gradient_checkpointing_func(block, x) if self.gradient_checkpointing else block(x)
        return self.last(x)


def test_checkpointing_keeps_what_is_outside_the_units_their_inputs_and_the_largest_unit():
    net = Blocks()
    measured = measure_saved_tensors(lambda: net(torch.zeros(1, 4)), net, checkpointed=net)
    # Each block saves its input and its ReLU output; the last Linear the second block's output.
    assert measured.total_bytes == 4 * (2 * (4 + 32) + 4)
    assert measured.kept_with_checkpointing == 4 * (4 + 4 + 4)  # two block inputs, the last Linear's input
    assert measured.largest_unit_bytes == 4 * 32  # one block's ReLU output, while it is recomputed
    assert not net.gradient_checkpointing  # left as it was


def tiny(name: str, *overrides: str):
    return load_train_config(resolve_config_path(name), ["train.batch_size=2", "train.mixed_precision='no'", *overrides])


def real_cpu_step(config, checkpointing: bool = False, autocast: bool = False) -> SavedTensors:
    """A real forward pass of the stage on CPU tensors, with the same hooks: what autograd
    saves there is the truth the estimate must meet (with diffusers' own gradient
    checkpointing when asked, which keeps only what it keeps)."""
    torch.manual_seed(0)
    plan = PLANS[config.stage](config)
    trained = nn.ModuleList([part.module for part in plan.parts if part.trainable])
    if checkpointing:
        plan.checkpointed.enable_gradient_checkpointing()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return measure_saved_tensors(plan.trained_forward, trained)


ESTIMATED_MODELS = ["cpu/text2img.yaml", "cpu/text2img-dit.yaml", "cpu/text2img-mmdit.yaml"]


@pytest.mark.parametrize("name", ESTIMATED_MODELS)
def test_the_estimate_is_within_5_percent_of_a_real_steps_saved_tensors(name):
    """The dry run's path (fake GPU, fused attention, fp32) against a real CPU step, without and
    with gradient checkpointing; the old sum of module outputs missed these by 12-27%."""
    _, _, estimated, _ = estimate(tiny(name))
    real = real_cpu_step(tiny(name))
    assert estimated.total_bytes == pytest.approx(real.total_bytes, rel=0.05)
    real_checkpointed = real_cpu_step(tiny(name), checkpointing=True)
    assert estimated.kept_with_checkpointing == pytest.approx(real_checkpointed.total_bytes, rel=0.05)
    assert 0 < estimated.largest_unit_bytes < estimated.total_bytes - estimated.kept_with_checkpointing


def test_mixed_precision_is_counted_in_the_dtypes_autocast_gives():
    """Autocast switched on for fake tensors gives what the real autocast saves, dtype by dtype
    (CPU's policy here, to compare with a real step; the dry run uses the GPU's)."""
    config = tiny("cpu/text2img.yaml", "train.mixed_precision=bf16")
    _, _, estimated, _ = estimate(config, device_type="cpu")
    real = real_cpu_step(tiny("cpu/text2img.yaml"), autocast=True)
    assert real.bytes_by_dtype.get("bfloat16", 0) > real.total_bytes / 4  # autocast did cast
    assert estimated.total_bytes == pytest.approx(real.total_bytes, rel=0.05)
    # Dtype by dtype within 5% of the whole: torch's shape-only kernels of the norms give their
    # (batch, groups) statistics in the input's dtype where the CPU kernels keep them in fp32.
    for dtype, size in real.bytes_by_dtype.items():
        assert abs(estimated.bytes_by_dtype.get(dtype, 0) - size) < 0.05 * real.total_bytes, dtype
    fp32 = estimate(tiny("cpu/text2img.yaml"), device_type="cpu")[2]
    assert estimated.total_bytes < 0.8 * fp32.total_bytes


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


def test_the_sharding_comes_from_the_flag_the_launch_or_accelerates_config(tmp_path):
    def from_file(text: str, processes: int = 8) -> Sharding:
        path = tmp_path / "default_config.yaml"
        path.write_text(text)
        return planned_sharding(None, processes, {}, path)

    assert from_file("distributed_type: FSDP\nfsdp_config:\n  fsdp_reshard_after_forward: FULL_SHARD\n").name == "fsdp"
    assert from_file("distributed_type: FSDP\nfsdp_config:\n  fsdp_reshard_after_forward: SHARD_GRAD_OP\n").name == "fsdp-grad-op"
    assert from_file("distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n  fsdp_reshard_after_forward: false\n").name == "fsdp-grad-op"
    assert from_file("distributed_type: FSDP\nfsdp_config:\n  fsdp_sharding_strategy: 1\n").name == "fsdp"  # older accelerate
    hybrid = from_file("distributed_type: FSDP\nnum_machines: 2\nfsdp_config:\n  fsdp_reshard_after_forward: HYBRID_SHARD\n")
    assert (hybrid.name, hybrid.group) == ("fsdp", 4)  # shards within a machine of 4
    assert from_file("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n").name == "zero2"
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert from_file(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {tmp_path / 'ds.json'}\n").name == "zero3"
    assert from_file("distributed_type: MULTI_GPU\nnum_processes: 8\n").name == "none"
    assert planned_sharding(None, 8, {}, tmp_path / "absent.yaml").name == "none"
    launched = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    assert planned_sharding(None, 8, launched, tmp_path / "absent.yaml") == Sharding("zero3", "ACCELERATE_USE_DEEPSPEED")
    assert planned_sharding("zero2", 8, launched).name == "zero2"  # --shard wins


@pytest.mark.parametrize(
    "name, divided",
    [
        ("none", set()),
        ("zero1", {"optimizer"}),
        ("zero2", {"gradients", "optimizer"}),
        ("fsdp-grad-op", {"gradients", "optimizer", "EMA"}),
        ("fsdp", {"weights, trained", "gradients", "optimizer", "EMA"}),
        ("zero3", {"weights, trained", "gradients", "optimizer", "EMA"}),
    ],
)
def test_each_sharding_divides_its_share_of_the_training_state(name, divided):
    sizes = StateSizes(trainable=1000, frozen=300, optimizer_bytes=8000)
    rows = state_rows(sizes, OPTIMIZER_ROWS["adamw"], 0.9999, Sharding(name, "test"), processes=4)
    full = {"weights, trained": 4000, "weights, frozen": 1200, "gradients": 4000, "optimizer": 8000, "EMA": 4000}
    for label, size in rows.items():
        (part,) = [part for part in full if label.startswith(part)]
        expected = full[part] // 4 if part in divided else full[part]
        assert (size, label.endswith(" / 4")) == (expected, part in divided), label
    one_gpu = state_rows(sizes, OPTIMIZER_ROWS["adamw"], 0.9999, Sharding(name, "test"), processes=1)
    assert sum(one_gpu.values()) == sum(full.values())


def test_the_dry_run_shows_the_optimizer_precision_and_the_per_gpu_share(tmp_path, monkeypatch, capsys):
    from ldm.cli.train import main

    monkeypatch.chdir(tmp_path)
    assert main(["--config", "cpu/text2img-dit.yaml", "--dry-run", "--num-processes", "8", "--shard", "zero3", "train.optimizer=adafactor"]) == 0
    report = capsys.readouterr().out
    assert "global batch 64 = 8 per device x 1 accumulation step x 8" in report
    assert "sharding: zero3 (--shard): weights, gradients, optimizer, EMA of the trained network divided by 8" in report
    assert "optimizer: adafactor; mixed precision: bf16 (train.mixed_precision auto" in report
    assert "optimizer (Adafactor, factored) / 8" in report and "weights, frozen (fp32)  " in report
    assert "under bf16 autocast (bfloat16 " in report
    with pytest.raises(SystemExit) as exit_:
        main(["--config", "cpu/text2img-dit.yaml", "--shard", "fsdp"])
    assert exit_.value.code == 2 and "--shard goes with --dry-run" in capsys.readouterr().err
