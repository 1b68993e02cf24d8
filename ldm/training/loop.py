"""The training loop shared by every stage, on accelerate: devices, DDP, mixed precision,
gradient accumulation. The stage owns networks and loss; this file owns the rest: the
optimizer and LR schedule, clipping, EMA, skipping non-finite steps, checkpoints and
resume, logging, validation and the final export."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ldm.data import DataStats, build_dataset, make_batches
from ldm.data.indexed import IndexedImageDataset
from ldm.data.latent_cache import CachedLatentDataset
from ldm.training.batches import Randomness
from ldm.errors import LdmError
from ldm.training.checkpoints import (
    CheckpointError,
    TrainingState,
    capture_rng,
    load_checkpoint,
    point_latest_at,
    restore_rng,
    save_checkpoint,
)
from ldm.training.config import TrainConfig
from ldm.training.reporting import Reporter
from ldm.training.speedups import apply_speedups
from ldm.training.stage_registry import build_stage
from ldm.training.stages import OpenDataset, Stage, StageContext

# Our schedule names -> diffusers.optimization names (all with linear warm-up first).
LR_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class TrainingError(LdmError):
    """Training cannot go on (e.g. repeated non-finite losses); one line saying why."""


@dataclass
class TrainResult:
    step: int
    start_step: int = 0  # the checkpoint's step on --resume; this run trained the steps after it
    losses: list[float] = field(default_factory=list)  # per step of this run, mean over processes
    skipped_steps: int = 0  # steps whose loss or gradient was not finite (not trained on)
    export_path: Optional[Path] = None
    data: DataStats = field(default_factory=DataStats)  # images this run read, all processes
    cached_samples: int = 0  # samples whose latents training read from the latent cache


def resolve_mixed_precision(requested: str, use_cpu: bool) -> str:
    """fp32 on CPU whatever is asked (CPU autocast is slow and not what users test);
    `auto` is bf16 where the GPU has it, else fp16."""
    if use_cpu or not torch.cuda.is_available():
        return "no"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def make_accelerator(config: TrainConfig, output_dir: Path, find_unused_parameters: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # Without an accelerator, say CPU explicitly: under torchrun, accelerate then runs
    # several CPU processes (gloo) instead of each process believing it is alone.
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not (
        torch.cuda.is_available() or torch.backends.mps.is_available()
    )
    return Accelerator(
        mixed_precision=resolve_mixed_precision(config.train.mixed_precision, use_cpu),
        gradient_accumulation_steps=config.train.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        cpu=use_cpu,
    )


def ldm_datasets(config: TrainConfig, rank: int, world_size: int) -> OpenDataset:
    """ldm.data datasets, split across processes by ldm.data. Caption dropout is off here:
    text2img applies it per step, with the step's randomness, for images and cached latents alike."""

    def open_dataset(split: str):
        data = dataclasses.replace(config.data, caption_dropout=0.0)
        return build_dataset(data, seed=config.train.seed, rank=rank, world_size=world_size, split=split)

    return open_dataset


def trained_weights(stage: Stage) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in stage.module.named_parameters() if p.requires_grad}


def load_trained_weights(stage: Stage, weights: dict[str, torch.Tensor]) -> None:
    expected = {name for name, p in stage.module.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing = sorted(expected - set(weights))[:1] or sorted(set(weights) - expected)[:1]
        raise CheckpointError(f"checkpoint weights do not match this config's model (first differing key: {missing[0]})")
    stage.module.load_state_dict(weights, strict=False)


class EMASwap:
    """Puts the EMA weights in place for validation and export, and the trained ones back."""

    def __init__(self, ema, parameters):
        self.ema, self.parameters = ema, parameters

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.parameters)


def apply_resumed_settings(settings, optimizer, lr_scheduler, ema) -> str:
    """A checkpoint brings back its learning rate and EMA decay; a config that asks for others
    on resume (train.lr=... --resume latest) gets them from here on. Says what changed."""
    changes = []
    if any(base != settings.lr for base in lr_scheduler.base_lrs):
        changes.append(f"train.lr {lr_scheduler.base_lrs[0]:g} -> {settings.lr:g}")
        lr_scheduler.base_lrs = [settings.lr] * len(lr_scheduler.base_lrs)
        for group, factor in zip(optimizer.param_groups, lr_scheduler.lr_lambdas):
            group["initial_lr"] = settings.lr
            group["lr"] = settings.lr * factor(lr_scheduler.last_epoch)
    if ema is not None and ema.decay != settings.ema_decay:
        changes.append(f"train.ema_decay {ema.decay:g} -> {settings.ema_decay:g}")
        ema.decay = settings.ema_decay
    return ", ".join(changes)


def train(config: TrainConfig, resume: Optional[Path] = None, open_dataset: Optional[OpenDataset] = None) -> TrainResult:
    """Trains `config.stage` for train.max_steps steps (continuing from checkpoint `resume`)."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    settings = config.train
    output_dir = Path(settings.output_dir)
    # The autoencoder's discriminator sits out its first steps: DDP must allow that.
    accelerator = make_accelerator(config, output_dir, find_unused_parameters=config.stage == "autoencoder")
    rank, world = accelerator.process_index, accelerator.num_processes
    open_dataset = open_dataset or ldm_datasets(config, rank, world)
    # Data first: a bad data path fails before any model is built.
    raw_dataset = open_dataset("train")
    torch.manual_seed(settings.seed)  # identical initial weights in every process
    context = StageContext(config, accelerator.device, output_dir, open_dataset, rank, world, accelerator.is_main_process)
    stage = build_stage(context)
    apply_speedups(stage, settings)
    training_data = stage.training_data(raw_dataset)
    batches = make_batches(training_data, settings.batch_size, settings.seed, rank, world, config.data.num_workers)

    parameters = stage.trained_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, betas=tuple(settings.adam_betas), weight_decay=settings.weight_decay)
    # Not passed to accelerator.prepare: its wrapper steps the schedule once per process.
    lr_scheduler = get_scheduler(
        LR_SCHEDULES[settings.lr_schedule], optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=settings.max_steps
    )
    ema = EMAModel(parameters, decay=settings.ema_decay) if settings.ema_decay else None
    module, optimizer = accelerator.prepare(stage.module, optimizer)

    step, counters = 0, {"skipped_steps": 0}
    if resume is not None:
        state = load_checkpoint(resume)
        load_trained_weights(stage, state.weights)
        optimizer.load_state_dict(state.optimizer)
        lr_scheduler.load_state_dict(state.lr_scheduler)
        if ema is not None and state.ema is not None:
            ema.load_state_dict(state.ema)
            ema.to(accelerator.device)
        changed = apply_resumed_settings(settings, optimizer, lr_scheduler, ema)
        if changed and accelerator.is_main_process:
            print(f"ldm-train: resuming with the config's {changed}", file=sys.stderr)
        batches.seek(state.data_position)
        stage.load_state(state.counters.get("stage", {}))
        stage.load_state_tensors(state.stage_tensors)
        counters.update({k: v for k, v in state.counters.items() if k != "stage"})
        restore_rng(state.rng)
        step = state.step
        if accelerator.is_main_process:  # `--resume latest` now continues this branch
            point_latest_at(output_dir / "checkpoints", resume)

    reporter = Reporter(accelerator, output_dir, config, start_step=step)
    reporter.note(f"{config.stage}: {world} process(es), global batch {settings.batch_size * settings.grad_accum * world}, "
                  f"mixed precision {accelerator.mixed_precision}" + (f", resumed at step {step} from {resume}" if resume else ""))
    if isinstance(raw_dataset, IndexedImageDataset):
        reporter.note(f"data: {raw_dataset.split_summary(config.data.validation)}")
    result = TrainResult(step=step, start_step=step, skipped_steps=counters["skipped_steps"])
    if isinstance(training_data, CachedLatentDataset):
        result.cached_samples = len(training_data)
    images_per_step = settings.batch_size * settings.grad_accum * world
    consecutive_bad = 0
    fp16 = accelerator.mixed_precision == "fp16"
    data = iter(batches)
    module.train()

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = TrainingState(
                step=step,
                weights=trained_weights(stage),
                optimizer=optimizer.state_dict(),
                lr_scheduler=lr_scheduler.state_dict(),
                data_position=batches.position(),
                ema=ema.state_dict() if ema is not None else None,
                counters={**counters, "stage": stage.state()},
                rng=capture_rng(),
                stage_tensors=stage.state_tensors(),
            )
            save_checkpoint(state, output_dir / "checkpoints", settings.keep_last)
        accelerator.wait_for_everyone()

    def evaluate() -> None:
        if accelerator.is_main_process:
            with EMASwap(ema, parameters), torch.no_grad():
                metrics = stage.evaluate(step)
            if metrics:
                reporter.log(step, metrics)
        accelerator.wait_for_everyone()

    while step < settings.max_steps:
        started = time.perf_counter()
        micro_losses = []
        for micro in range(settings.grad_accum):
            batch = next(data)
            randomness = Randomness(settings.seed, step, micro, rank, world, accelerator.device)
            with accelerator.accumulate(module):
                with accelerator.autocast():
                    loss, logs = module(batch, randomness, step)
                micro_losses.append(loss.detach().float())
                accelerator.backward(loss)
        loss_value = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean")
        finite = bool(torch.isfinite(loss_value))
        grad_norm = None
        if finite and settings.max_grad_norm:
            grad_norm = accelerator.clip_grad_norm_(parameters, settings.max_grad_norm)
            # fp16 gradient overflow is the grad scaler's business (it skips and lowers its scale).
            finite = bool(torch.isfinite(grad_norm)) or fp16
        if finite or fp16:
            # fp16: the scaler must see every step, or its unscale/update bookkeeping breaks;
            # it skips the update itself when the gradients are not finite.
            optimizer.step()
        if finite:
            lr_scheduler.step()
            if ema is not None:
                ema.step(parameters)
            stage.after_step()
            consecutive_bad = 0
        else:
            # Same decision in every process: the loss and the gradient norm are global.
            counters["skipped_steps"] += 1
            consecutive_bad += 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        result.losses.append(float(loss_value))
        reporter.step(step, float(loss_value), lr_scheduler.get_last_lr()[0], images_per_step / (time.perf_counter() - started),
                      grad_norm, counters["skipped_steps"], {k: float(v) for k, v in logs.items() if k != "loss"})
        if consecutive_bad >= settings.max_bad_steps:
            reporter.close()
            raise TrainingError(
                f"stopped at step {step}: {consecutive_bad} consecutive steps had a non-finite loss or gradient "
                f"(lower train.lr, check the data, or raise train.max_bad_steps); the last checkpoint is intact"
            )
        if step % settings.save_every == 0 or step == settings.max_steps:
            checkpoint()
        if config.validation.every and step % config.validation.every == 0 and step < settings.max_steps:
            evaluate()

    reporter.steps_done()
    evaluate()
    if accelerator.is_main_process:
        with EMASwap(ema, parameters):
            result.export_path = stage.export()
        reporter.note(f"exported {result.export_path}")
    accelerator.wait_for_everyone()
    result.data = data_totals(raw_dataset, accelerator)
    reporter.data(step, result.data, result.cached_samples)
    reporter.close()
    accelerator.end_training()
    result.step = step
    result.skipped_steps = counters["skipped_steps"]
    return result


def data_totals(dataset, accelerator) -> DataStats:
    """The dataset's counts (read, converted, skipped) summed over the processes. Each process
    counts a sample once; with several processes and more than one epoch, a sample that two
    processes read in different epochs is counted by both (known limit: the sum may be high)."""
    stats = getattr(dataset, "stats", None) or DataStats()
    totals = accelerator.reduce(stats.totals().to(accelerator.device), reduction="sum")
    return DataStats.from_totals(totals)


