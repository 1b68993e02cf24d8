"""`ldm-train --dry-run`: what a run would cost, before any hardware is committed.

The stage's networks are built on the meta device (shapes, no memory, no weights read) and
one training forward pass runs on meta tensors of the configured batch. From it:
- activations: the sizes of every leaf module's output, summed (what autograd keeps for the
  backward pass, roughly); with gradient checkpointing, only the outputs of the checkpointed
  blocks are kept, plus the inside of the largest block while it is recomputed;
- FLOPs: torch.utils.flop_counter on the same pass; a training step is forward + backward
  (about 3x the forward; 4x with checkpointing, which runs the forward twice) for the trained
  networks, forward only for the frozen ones.
Nothing is written and no data is read: the data path is only checked for existence.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ldm.config import ConfigError, from_dict
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
from ldm.training.optimizers import state_bytes
from ldm.training.process_count import ProcessCount, global_batch_line, planned_processes

GIB = 2**30
FP32 = 4
# The memory table's optimizer row, by train.optimizer (ldm.training.optimizers.state_bytes).
OPTIMIZER_ROWS = {
    "adamw": "optimizer (AdamW, 2 fp32 states)",
    "adamw8bit": "optimizer (AdamW 8-bit states)",
    "adafactor": "optimizer (Adafactor, factored)",
}


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
    checkpoint_units: tuple[type, ...] = ()  # what the stage's gradient checkpointing wraps; () = none
    latent_shape: tuple[int, ...] | None = None  # one sample's latents (C, h, w)
    notes: list[str] = field(default_factory=list)


@dataclass
class Activations:
    elements: int  # leaf outputs, no checkpointing
    checkpointed_elements: int  # with checkpointing
    forward_flops: int


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
    pixels = _meta_pixels(config)

    def forward():
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample  # (B, 3, R, R)
        if disc is not None:  # generator term, real and fake logits
            return [disc(reconstruction), disc(pixels), disc(reconstruction.detach())]
        return reconstruction

    factor = config.model.vae.downsample_factor
    side = config.data.resolution // factor
    notes = [f"the discriminator joins at step {settings.disc_start}"] if disc is not None else []
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
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D


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
    tokens = torch.zeros(batch, model.text_encoder.context_length, dtype=torch.long)  # (B, L)
    context = torch.zeros(batch, model.text_encoder.context_length, components.first_text_encoder.width)  # (B, L, D)
    cond = _image_conditions(config, Conditioning(context), side)
    pixels = _meta_pixels(config, size)
    # The frozen VAE encodes every step: the image (and for inpainting the masked image)
    # unless latents are cached.
    cached = config.stage in ("text2img", "upscaler") and section.latent_cache and not (upscaler and section.crop)
    encodes = 2 if inpaint else (0 if cached else 1)
    if cached:
        notes.append("latent cache on: the VAE encodes only in the first epoch (not counted)")
    if upscaler:
        notes.append(f"upscaler: x{factor} ({side} px low-resolution pictures -> {size} px, the VAE's factor); {_crop_note(config)}")

    def frozen():
        components.first_text_encoder(tokens)
        for _ in range(encodes):
            components.vae.encode(pixels)

    parts = [Part(model.denoiser.kind, components.denoiser, True), Part("vae", components.vae, False), Part("text_encoder", components.first_text_encoder, False)]
    return Plan(
        parts,
        lambda: denoise_call(components.denoiser, noisy, timesteps, cond),
        frozen_forward=frozen,
        checkpoint_units=(ResnetBlock2D, BasicTransformerBlock),
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


def measure_activations(forward: Callable[[], object], root: nn.Module, units: tuple[type, ...]) -> Activations:
    """Runs `forward` once (meta tensors), summing the outputs of `root`'s leaf modules, in
    total and per checkpointed unit, and counting FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    unit_names = [name for name, module in root.named_modules() if name and isinstance(module, units)]
    outside = 0
    inside: dict[str, int] = defaultdict(int)  # unit -> elements of its leaves' outputs
    unit_outputs = 0
    handles = []

    def unit_of(name: str) -> str | None:
        # Nested units (a block inside a block) belong to the outermost one.
        return next((unit for unit in unit_names if name.startswith(unit + ".")), None)

    def on_leaf(name: str):
        def hook(module, inputs, output):
            nonlocal outside
            size = sum(t.numel() for t in _tensors(output))
            unit = unit_of(name)
            if unit is None:
                outside += size
            else:
                inside[unit] += size

        return hook

    def on_unit(module, inputs, output):
        nonlocal unit_outputs
        unit_outputs += sum(t.numel() for t in _tensors(output))

    outermost = {name for name in unit_names if unit_of(name) is None}
    for name, module in root.named_modules():
        if not any(module.children()):
            handles.append(module.register_forward_hook(on_leaf(name)))
        if name in outermost:
            handles.append(module.register_forward_hook(on_unit))
    try:
        with FlopCounterMode(display=False) as counter:
            forward()
    finally:
        for handle in handles:
            handle.remove()
    total = outside + sum(inside.values())
    checkpointed = outside + unit_outputs + max(inside.values(), default=0)
    return Activations(total, checkpointed, counter.get_total_flops())


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _tensors(item)]
    return [t for t in vars(output).values() if isinstance(t, torch.Tensor)] if hasattr(output, "__dict__") else []


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


# ----------------------------------------------------------------------------- report


def activation_bytes(precision: str) -> int:
    """bf16/fp16 autocast keeps most activations in 2 bytes; `auto` is bf16 on a GPU."""
    return 4 if precision == "no" else 2


def dry_run_report(config: TrainConfig, processes: ProcessCount | None = None) -> str:
    """Builds the stage on the meta device and describes its cost per GPU; writes nothing.
    `processes`: the run's process count (planned_processes() unless given)."""
    if config.stage not in PLANS:
        raise ConfigError(f"--dry-run does not estimate stage {config.stage} yet (it covers {', '.join(PLANS)})")
    with torch.device("meta"):
        plan = PLANS[config.stage](config)
        trained = nn.ModuleList([part.module for part in plan.parts if part.trainable])
        activations = measure_activations(plan.trained_forward, trained, plan.checkpoint_units)
        frozen_flops = count_frozen_flops(plan.frozen_forward)
    train = config.train
    trainable = sum(p.numel() for p in trained.parameters())
    total = sum(p.numel() for part in plan.parts for p in part.module.parameters())
    act = activation_bytes(train.mixed_precision)
    fixed = {
        "weights (fp32)": total * FP32,
        "gradients (fp32)": trainable * FP32,
        OPTIMIZER_ROWS[train.optimizer]: state_bytes(train.optimizer, [p.shape for p in trained.parameters()]),
        "EMA (fp32)" if train.ema_decay else "EMA (off: train.ema_decay null)": trainable * FP32 if train.ema_decay else 0,
    }
    checkpointing = bool(plan.checkpoint_units)
    passes = 4 if checkpointing and train.gradient_checkpointing else 3
    step_flops = (passes * activations.forward_flops + frozen_flops) * train.grad_accum

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
    lines += ["", global_batch_line(processes or planned_processes(), train.batch_size, train.grad_accum)]
    lines += ["", f"memory per GPU (micro-batch {train.batch_size}, mixed precision {train.mixed_precision}):"]
    lines += memory_lines(fixed, activations, act, checkpointing, train.gradient_checkpointing)
    lines += [
        "",
        (
            f"compute: {step_flops / 1e9:,.1f} GFLOP per optimizer step per GPU "
            f"({train.grad_accum} micro-batch{'es' if train.grad_accum > 1 else ''}: trained forward x{passes}"
            f"{' incl. recompute' if passes == 4 else ''}, frozen forward x1)"
        ),
        f"data: {describe_data(config)}",
        f"output: {train.output_dir} ({'exists' if Path(train.output_dir).exists() else 'would be created'})",
    ]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def memory_lines(fixed: dict[str, int], activations, act: int, checkpointing: bool, checkpointing_on: bool) -> list[str]:
    """The memory table: weights, gradients, optimizer and EMA, then the activations with and
    without gradient checkpointing (`act` bytes each), each with its total."""
    fixed_total = sum(fixed.values())
    lines = [f"  {name:<36} {size / GIB:8.2f} GiB" for name, size in fixed.items()]
    plain = activations.elements * act
    lines.append(f"  {'activations, no checkpointing':<36} {plain / GIB:8.2f} GiB   total {(fixed_total + plain) / GIB:.2f} GiB")
    if checkpointing:
        saved = activations.checkpointed_elements * act
        lines.append(f"  {'activations, gradient checkpointing':<36} {saved / GIB:8.2f} GiB   total {(fixed_total + saved) / GIB:.2f} GiB")
        lines.append(f"  (train.gradient_checkpointing is {'on' if checkpointing_on else 'off'})")
    else:
        lines.append("  (this stage does not use gradient checkpointing)")
    lines.append(
        f"  activations: sum of the trained networks' module outputs in one meta forward pass, "
        f"{act} bytes each; framework buffers, CUDA context and fragmentation not included"
    )
    return lines
