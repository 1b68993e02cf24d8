"""`ldm-train --dry-run`: what a run would cost, before any hardware is committed.

The stage's networks are built as fake tensors on a fake GPU (shapes and dtypes, no memory,
no weights read) and one training forward pass runs on fake inputs of the configured batch,
under the run's autocast. From it:
- activations: the tensors autograd saves for the backward pass, by their storages' bytes
  (ldm.training.activation_estimate); with gradient checkpointing, what is saved outside the
  checkpointed blocks plus their inputs, plus the inside of the largest block while it is
  recomputed;
- weights, gradients, optimizer and EMA per GPU, divided where FSDP or ZeRO shards them
  (ldm.training.shard_plan, ldm.training.memory_table);
- FLOPs: torch.utils.flop_counter on the same pass; a training step is forward + backward
  (about 3x the forward; 4x with checkpointing, which runs the forward twice) for the trained
  networks, forward only for the frozen ones.
Nothing is written and no data is read: the data path is only checked for existence.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ldm.config import ConfigError, from_dict
from ldm.data.buckets import resolve_buckets
from ldm.data.shards import REMOTE_PREFIXES
from ldm.formats.model_folder import (
    COMPONENT_FILE,
    CONFIG_FILE,
    is_component_folder,
    read_model_config,
)
from ldm.models.autoencoder import build_vae
from ldm.models.components import build_components
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import denoise_call
from ldm.training.autoencoder_stage import patch_discriminator
from ldm.training.clip_stage import build_clip
from ldm.training.config import TrainConfig, random_text_encoder
from ldm.training.size_conditioning import with_training_sizes
from ldm.training.activation_estimate import FusedAttention, SavedTensors, fake_device, measure_saved_tensors, mixed_precision
from ldm.training.memory_table import OPTIMIZER_ROWS, StateSizes, memory_lines, state_rows
from ldm.training.optimizers import state_bytes
from ldm.training.process_count import ProcessCount, global_batch_line, planned_processes
from ldm.training.shard_plan import Sharding, planned_sharding, shard_line


@dataclass
class Part:
    name: str
    module: nn.Module
    trainable: bool


@dataclass
class Plan:
    """One stage's networks (on meta) and its training forward pass on meta inputs."""

    parts: list[Part]
    trained_forward: Callable[[], object]  # with gradients: activations are kept
    frozen_forward: Callable[[], object] | None = None  # under no_grad: nothing kept
    checkpointed: nn.Module | None = None  # the model train.gradient_checkpointing acts on; None: none
    latent_shape: tuple[int, ...] | None = None  # one sample's latents (C, h, w)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- plans


def _meta_pixels(config: TrainConfig, size: int | None = None) -> torch.Tensor:
    size = size or config.data.resolution
    return torch.zeros(config.train.batch_size, 3, size, size)  # (B, 3, R, R)


def _autoencoder_plan(config: TrainConfig) -> Plan:

    settings = config.autoencoder
    vae = build_vae(config.model.vae)
    parts = [Part("vae", vae, True)]
    disc = None
    if settings.disc_start is not None:
        disc = patch_discriminator(settings.disc_channels, settings.disc_layers, config.model.vae.in_channels)
        parts.append(Part("discriminator", disc, True))
    pixels = _meta_pixels(config, settings.crop)  # what a step trains on: the crop, else the picture

    def forward():
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample  # (B, 3, R, R)
        if disc is not None:  # generator term, real and fake logits
            return [disc(reconstruction), disc(pixels), disc(reconstruction.detach())]
        return reconstruction

    factor = config.model.vae.downsample_factor
    side = (settings.crop or config.data.resolution) // factor
    notes = [f"the discriminator joins at step {settings.disc_start}"] if disc is not None else []
    if settings.crop:
        notes.append(f"autoencoder: random {settings.crop} px crops of {config.data.resolution} px pictures")
    return Plan(parts, forward, latent_shape=(config.model.vae.latent_channels, side, side), notes=notes)


def _clip_plan(config: TrainConfig) -> Plan:

    clip = build_clip(config)
    text = config.model.text_encoder
    pixels = _meta_pixels(config, config.clip.image_size)
    tokens = torch.zeros(config.train.batch_size, text.context_length, dtype=torch.long)  # (B, L)
    return Plan([Part("clip", clip, True)], lambda: clip(pixels, tokens))


def _denoiser_model_config(config: TrainConfig, init_from: str | None, section) -> list[str]:
    """Reads the architecture of folders named by init_from / vae_from / text_encoder_from
    (config files only, no weights) into config.model; returns notes about what is missing."""
    import yaml


    notes = []
    if init_from:
        path = Path(init_from)
        if (path / "model_index.json").is_file():
            notes.append(f"{init_from} is a diffusers folder: sizes below are from the config's model section")
        elif path.is_dir():
            config.model = read_model_config(path)
        else:
            notes.append(f"{init_from} does not exist yet: sizes below are from the config's model section")
    for key, kind in (("vae_from", "vae"), ("text_encoder_from", "text_encoder")):
        value = getattr(section, key, None)
        if not value:
            continue
        path = Path(value)
        if is_component_folder(path):
            document = yaml.safe_load((path / COMPONENT_FILE).read_text())
            current = getattr(config.model, kind)
            setattr(config.model, kind, from_dict(type(current), document["config"], kind))
        elif (path / CONFIG_FILE).is_file():
            setattr(config.model, kind, getattr(read_model_config(path), kind))
        else:
            notes.append(f"{config.stage}.{key}: {value} does not exist yet (train that stage first); its size is from the config")
    return notes


def _denoiser_plan(config: TrainConfig) -> Plan:
    """text2img, inpaint and upscaler: the U-Net is trained; the VAE and text encoder are frozen."""
    inpaint, upscaler = config.stage == "inpaint", config.stage == "upscaler"
    section = getattr(config, config.stage)
    notes = _denoiser_model_config(config, section.init_from, None if inpaint else section)
    model = config.model
    model.text_encoder = dataclasses.replace(model.text_encoder, pretrained=None)  # no weights read
    latent_channels = model.vae.latent_channels
    if inpaint:
        model.denoiser.in_channels = 2 * latent_channels + 1  # noisy latents + mask + masked image latents
    components = build_components(model)
    batch, factor = config.train.batch_size, model.vae.downsample_factor
    size = (config.upscaler.crop or config.data.resolution) if upscaler else config.data.resolution
    side = size // factor
    noisy = torch.zeros(batch, latent_channels, side, side)  # (B, C, h, w)
    timesteps = torch.zeros(batch, dtype=torch.long)
    length = model.sdxl.text_encoder.context_length if model.sdxl is not None else model.text_encoder.context_length
    tokens = torch.zeros(batch, length, dtype=torch.long)  # (B, L)
    encoders = components.text_encoders
    cond = components.conditioner.combine([encoder(tokens) for encoder in encoders])  # meta: shapes only
    cond = with_training_sizes(_image_conditions(config, cond, side), {"caption": [""] * batch}, noisy, components.vae, components.denoiser)
    pixels = _meta_pixels(config, size)
    # The frozen VAE encodes every step: the image (and for inpainting the masked image)
    # unless latents are cached.
    cached = config.stage in ("text2img", "upscaler") and section.latent_cache and not (upscaler and section.crop)
    encodes = 2 if inpaint else (0 if cached else 1)
    if cached:
        notes.append("latent cache on: the VAE encodes only in the first epoch (not counted)")
    if upscaler:
        notes.append(f"upscaler: x{factor} ({side} px low-resolution pictures -> {size} px, the VAE's factor); {_crop_note(config)}")
    if config.prior.enabled:
        notes.append(f"prior: each step also trains {config.train.batch_size} class images (a second forward pass, not counted: about twice the activations)")

    def frozen():
        for encoder in encoders:
            encoder(tokens)
        for _ in range(encodes):
            components.vae.encode(pixels)

    parts = [Part(model.denoiser.kind, components.denoiser, True), Part("vae", components.vae, False), *[Part(name, module, False) for name, module in components.modules().items() if name.startswith("text_encoder")]]
    return Plan(
        parts,
        lambda: denoise_call(components.denoiser, noisy, timesteps, cond),
        frozen_forward=frozen,
        checkpointed=components.denoiser,
        latent_shape=(latent_channels, side, side),
        notes=notes,
    )


def _image_conditions(config: TrainConfig, cond: Conditioning, side: int) -> Conditioning:
    """What the stage's denoiser reads beside the noisy latents (meta tensors of the batch)."""
    batch = len(cond)
    if config.stage == "inpaint":
        return cond.replace(concat=torch.zeros(batch, config.model.vae.latent_channels + 1, side, side))
    if config.stage == "upscaler":
        picture = torch.zeros(batch, 3, side, side)  # (B, 3, h, w) the noised low-resolution picture
        return cond.replace(concat=picture).with_vector("noise_level", torch.zeros(batch, dtype=torch.long))
    return cond


def _crop_note(config: TrainConfig) -> str:
    crop = config.upscaler.crop
    if crop is None:
        return f"whole {config.data.resolution} px pictures"
    return f"random {crop} px crops of {config.data.resolution} px pictures"


PLANS: dict[str, Callable[[TrainConfig], Plan]] = {
    "autoencoder": _autoencoder_plan,
    "clip": _clip_plan,
    "text2img": _denoiser_plan,
    "inpaint": _denoiser_plan,
    "upscaler": _denoiser_plan,
}


# ----------------------------------------------------------------------------- measuring


def count_frozen_flops(forward: Callable[[], object] | None) -> int:
    if forward is None:
        return 0
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- data


def describe_data(config: TrainConfig) -> str:
    """Where the run would read from, and whether it is there (nothing is opened)."""
    data = config.data
    where = f"{data.source} {data.path or '(data.path is empty)'}"
    if not data.path:
        return f"{where}: MISSING"
    if data.source == "webdataset":
        import webdataset as wds

        urls = wds.shardlists.expand_urls(data.path)
        local = [u for u in urls if not u.startswith(REMOTE_PREFIXES)]
        found = sum(Path(u.removeprefix("file:")).is_file() for u in local)
        remote = f", {len(urls) - len(local)} remote (not checked)" if len(local) < len(urls) else ""
        status = "" if found == len(local) else ": MISSING"
        return f"{where}: {len(urls)} shards, {found} of {len(local)} local ones found{remote}{status}"
    return f"{where}: {'found' if Path(data.path).exists() else 'MISSING'}"


def bucket_lines(config: TrainConfig) -> list[str]:
    """data.buckets' shapes: the memory above is the square's; every bucket has about its pixels."""
    buckets = resolve_buckets(config.data.buckets, config.data.resolution)
    if buckets is None:
        return []
    return [f"buckets: {buckets.summary()}; memory is estimated for the square {config.data.resolution} px picture, every bucket has about as many pixels"]


# ----------------------------------------------------------------------------- report


def resolved_precision(requested: str) -> tuple[str, str]:
    """The mixed precision a GPU run gets, and why (the loop's choice on a GPU)."""
    if requested == "auto":
        return "bf16", "train.mixed_precision auto: bf16 on GPUs that have it (Ampere and later), else fp16, the same bytes"
    return requested, f"train.mixed_precision {requested}"


def estimate(config: TrainConfig, device_type: str = "cuda") -> tuple[Plan, nn.ModuleList, SavedTensors, int]:
    """Builds the stage on a fake device and runs its training forward pass under the run's
    autocast: (plan, trained networks, what autograd saves, FLOPs of the frozen forward).
    device_type cuda: a GPU's autocast policy and fused attention; cpu: the CPU's own (tests
    compare it with a real CPU step)."""
    precision, _ = resolved_precision(config.train.mixed_precision)
    attention = FusedAttention() if device_type == "cuda" else contextlib.nullcontext()
    with fake_device(device_type):
        plan = PLANS[config.stage](config)
        trained = nn.ModuleList([part.module for part in plan.parts if part.trainable])
        with mixed_precision(device_type, precision), attention:
            saved = measure_saved_tensors(plan.trained_forward, trained, plan.checkpointed)
        frozen_flops = count_frozen_flops(plan.frozen_forward)
    return plan, trained, saved, frozen_flops


def dry_run_report(config: TrainConfig, processes: ProcessCount | None = None, sharding: Sharding | None = None) -> str:
    """Builds the stage without memory and describes its cost per GPU; writes nothing.
    `processes`: the run's process count (planned_processes() unless given); `sharding`: how
    the trained state is divided over them (planned_sharding() unless given)."""
    if config.stage not in PLANS:
        raise ConfigError(f"--dry-run does not estimate stage {config.stage} yet (it covers {', '.join(PLANS)})")
    processes = processes or planned_processes()
    sharding = sharding or planned_sharding(None, processes.count)
    plan, trained, saved, frozen_flops = estimate(config)
    train = config.train
    trainable = sum(p.numel() for p in trained.parameters())
    total = sum(p.numel() for part in plan.parts for p in part.module.parameters())
    checkpointing = plan.checkpointed is not None
    passes = 4 if checkpointing and train.gradient_checkpointing else 3
    step_flops = (passes * saved.forward_flops + frozen_flops) * train.grad_accum
    precision, why = resolved_precision(train.mixed_precision)

    lines = [f"dry run: stage {config.stage}, model {config.model.name}; nothing trained, nothing written"]
    refusal = random_text_encoder(config)
    if refusal:
        lines.append(f"ldm-train would refuse this config: {refusal}")
    lines += ["", "parameters:"]
    for part in plan.parts:
        count = sum(p.numel() for p in part.module.parameters())
        lines.append(f"  {part.name:<14} {count:>15,}  {'trainable' if part.trainable else 'frozen'}")
    lines.append(f"  {'total':<14} {total:>15,}  ({trainable:,} trainable, {total - trainable:,} frozen)")
    if plan.latent_shape:
        c, h, w = plan.latent_shape
        lines.append(f"latents: {c} x {h} x {w} per image ({h * config.model.vae.downsample_factor} px)")
    lines += ["", global_batch_line(processes, train.batch_size, train.grad_accum), shard_line(sharding, processes.count)]
    lines += [f"optimizer: {train.optimizer}; mixed precision: {precision} ({why})"]
    lines += ["", f"memory per GPU (micro-batch {train.batch_size}):"]
    weights = StateSizes(trainable, total - trainable, state_bytes(train.optimizer, [p.shape for p in trained.parameters()]))
    fixed = state_rows(weights, OPTIMIZER_ROWS[train.optimizer], train.ema_decay, sharding, processes.count)
    lines += memory_lines(fixed, saved, checkpointing, train.gradient_checkpointing, precision)
    lines += [
        "",
        (
            f"compute: {step_flops / 1e9:,.1f} GFLOP per optimizer step per GPU "
            f"({train.grad_accum} micro-batch{'es' if train.grad_accum > 1 else ''}: trained forward x{passes}"
            f"{' incl. recompute' if passes == 4 else ''}, frozen forward x1)"
        ),
        f"data: {describe_data(config)}",
        *bucket_lines(config),
        f"output: {train.output_dir} ({'exists' if Path(train.output_dir).exists() else 'would be created'})",
    ]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)
