"""The training loop shared by every stage, on accelerate: devices, DDP, mixed precision,
gradient accumulation. The stage owns networks and loss; this file owns the rest: the
optimizer and LR schedule, clipping, EMA, skipping non-finite steps, checkpoints and
resume, logging, validation and the final export."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from ldm.data import DataStats, build_dataset, make_batches
from ldm.data.buckets import require_plan
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
from ldm.training.data_positions import process_data_position, saved_data_position
from ldm.training import fsdp_state
from ldm.training.optimizers import apply_tf32, build_optimizer, check_optimizer
from ldm.training.reporting import Reporter
from ldm.training.run_end import leaving_together
from ldm.training.sharding import check_sharding, grad_norm_is_finite, sharding_of
from ldm.training.speedups import apply_speedups
from ldm.training.stage_registry import STAGES, build_stage
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
    scaler_skipped_steps: int = 0  # fp16: steps the loss scaler skipped on an overflow (no LR or EMA step)
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
    """find_unused_parameters: the stage's declaration (Stage.find_unused_parameters)."""
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


def check_trained_weights(stage: Stage, weights: dict[str, torch.Tensor]) -> None:
    expected = {name for name, p in stage.module.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing = sorted(expected - set(weights))[:1] or sorted(set(weights) - expected)[:1]
        raise CheckpointError(f"checkpoint weights do not match this config's model (first differing key: {missing[0]})")


def load_trained_weights(stage: Stage, weights: dict[str, torch.Tensor]) -> None:
    check_trained_weights(stage, weights)
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


def apply_resumed_settings(train_section, optimizer, lr_scheduler, ema) -> str:
    """A checkpoint brings back its learning rate and EMA decay; a config that asks for others
    on resume (train.lr=... --resume latest) gets them from here on. Says what changed."""
    changes = []
    if any(base != train_section.lr for base in lr_scheduler.base_lrs):
        changes.append(f"train.lr {lr_scheduler.base_lrs[0]:g} -> {train_section.lr:g}")
        lr_scheduler.base_lrs = [train_section.lr] * len(lr_scheduler.base_lrs)
        for group, factor in zip(optimizer.param_groups, lr_scheduler.lr_lambdas):
            group["initial_lr"] = train_section.lr
            group["lr"] = train_section.lr * factor(lr_scheduler.last_epoch)
    if ema is not None and ema.decay != train_section.ema_decay:
        changes.append(f"train.ema_decay {ema.decay:g} -> {train_section.ema_decay:g}")
        ema.decay = train_section.ema_decay
    return ", ".join(changes)


class StepOutcome(NamedTuple):
    loss: float  # mean over micro-batches and processes
    grad_norm: Optional[torch.Tensor]  # before clipping; None when train.max_grad_norm is off or the loss was not finite
    trained: bool  # False: the loss or gradient was not finite and the step was skipped (a step the fp16 scaler skipped is not: the scaler handles its overflows)
    logs: dict  # the module's other values, from the last micro-batch


@dataclass
class Run:
    """The moving parts of one training run, from the first step to the export."""

    config: TrainConfig
    accelerator: object
    stage: Stage
    module: torch.nn.Module  # stage.module as accelerate prepared it (DDP with several processes; sharded in place under FSDP)
    parameters: list  # the trained parameters (under FSDP: this process's shards)
    optimizer: object
    lr_scheduler: object
    ema: Optional[object]
    batches: object
    # skipped_steps: not finite (not trained on); scaler_skipped_steps: fp16 overflow, skipped by the scaler
    counters: dict = field(default_factory=lambda: {"skipped_steps": 0, "scaler_skipped_steps": 0})
    sharded: bool = False  # FSDP: checkpoints, validation and export gather the shards (ldm.training.fsdp_state)
    whole_stage: Optional[Stage] = None  # FSDP: an unsharded copy of the stage on the main process, for validation and export

    @classmethod
    def prepare(cls, config: TrainConfig, accelerator, stage: Stage, batches) -> "Run":
        """The optimizer, LR schedule and EMA of the stage's trained parameters. Under FSDP the
        module is sharded first, and the optimizer and EMA are built over its shards."""
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        train_section = config.train
        check_optimizer(train_section.optimizer, accelerator.device)
        apply_tf32(train_section.allow_tf32)
        sharded = sharding_of(accelerator) == "fsdp"
        if sharded:
            module, parameters = fsdp_state.shard_module(accelerator, stage.module)
        else:
            parameters = stage.trained_parameters()
        optimizer = build_optimizer(train_section, parameters)
        # Not passed to accelerator.prepare: its wrapper steps the schedule once per process.
        lr_scheduler = get_scheduler(
            LR_SCHEDULES[train_section.lr_schedule], optimizer,
            num_warmup_steps=train_section.warmup_steps, num_training_steps=train_section.max_steps,
        )  # fmt: skip
        ema = EMAModel(parameters, decay=train_section.ema_decay) if train_section.ema_decay else None
        if sharded:
            optimizer = accelerator.prepare_optimizer(optimizer)
        else:
            module, optimizer = accelerator.prepare(stage.module, optimizer)
        return cls(config, accelerator, stage, module, parameters, optimizer, lr_scheduler, ema, batches, sharded=sharded)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.train.output_dir)

    def load_optimizer_state(self, checkpoint: Path, saved: dict) -> None:
        """The checkpoint's optimizer state, if it is this optimizer's: torch loads another
        optimizer's settings without a word, and the first step fails on them."""
        saved_keys, own_keys = (set(group) - {"params"} for group in (saved["param_groups"][0], self.optimizer.param_groups[0]))
        try:
            # Each has settings the other lacks: another optimizer. (One side's extra keys alone are
            # another torch version's, which torch's own loading fills in.)
            if saved_keys - own_keys and own_keys - saved_keys:
                raise ValueError("another optimizer saved it")
            if self.sharded:
                names = fsdp_state.parameter_names(self.module, self.parameters)
                fsdp_state.load_optimizer_state(self.module, self.optimizer.optimizer, saved, names)
            else:
                self.optimizer.load_state_dict(saved)
        except (ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {checkpoint}: its optimizer state does not fit train.optimizer {self.config.train.optimizer} "
                f"(a run resumes with the optimizer it started with; {error})"
            ) from None

    def resume(self, checkpoint: Path) -> int:
        """Puts back the state saved in `checkpoint`; returns its step."""
        state = load_checkpoint(checkpoint)
        if self.sharded:
            check_trained_weights(self.stage, state.weights)
            fsdp_state.load_weights(self.module, state.weights)
        else:
            load_trained_weights(self.stage, state.weights)
        self.load_optimizer_state(checkpoint, state.optimizer)
        self.lr_scheduler.load_state_dict(state.lr_scheduler)
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
            if self.sharded:
                fsdp_state.shard_ema(self.ema, self.parameters)
            self.ema.to(self.accelerator.device)
        changed = apply_resumed_settings(self.config.train, self.optimizer, self.lr_scheduler, self.ema)
        if changed and self.accelerator.is_main_process:
            print(f"ldm-train: resuming with the config's {changed}", file=sys.stderr)
        self.batches.seek(process_data_position(state.data_position, self.accelerator.process_index, self.accelerator.num_processes))
        self.stage.load_state(state.counters.get("stage", {}))
        self.stage.load_state_tensors(state.stage_tensors)
        self.counters.update({k: v for k, v in state.counters.items() if k != "stage"})
        restore_rng(state.rng)
        if self.accelerator.is_main_process:  # `--resume latest` now continues this branch
            point_latest_at(self.output_dir / "checkpoints", checkpoint)
        return state.step

    def train_step(self, data, step: int) -> StepOutcome:
        """One optimizer step over train.grad_accum micro-batches from `data`."""
        train_section, accelerator = self.config.train, self.accelerator
        micro_losses = []
        for micro in range(train_section.grad_accum):
            batch = next(data)
            randomness = Randomness(train_section.seed, step, micro, accelerator.process_index, accelerator.num_processes, accelerator.device)
            with accelerator.accumulate(self.module):
                with accelerator.autocast():
                    loss, logs = self.module(batch, randomness, step)
                micro_losses.append(loss.detach().float())
                accelerator.backward(loss)
        loss_value = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean")
        finite = bool(torch.isfinite(loss_value))
        fp16 = accelerator.mixed_precision == "fp16"
        grad_norm = None
        if finite and train_section.max_grad_norm:
            grad_norm = accelerator.clip_grad_norm_(self.parameters, train_section.max_grad_norm)
            # fp16 gradient overflow is the grad scaler's business (it skips and lowers its scale).
            finite = grad_norm_is_finite(grad_norm) or fp16
        if finite or fp16:
            # fp16: the scaler must see every step, or its unscale/update bookkeeping breaks;
            # it skips the update itself when the gradients are not finite.
            self.optimizer.step()
        # A step the scaler skipped (fp16 overflow: it lowers its scale and tries again) changed
        # no weight, so neither the LR schedule nor EMA moves; it is counted, not an error.
        scaler_skipped = finite and accelerator.optimizer_step_was_skipped
        if finite and not scaler_skipped:
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.parameters)
            self.stage.after_step()
        elif scaler_skipped:
            self.counters["scaler_skipped_steps"] += 1
        else:
            # Same decision in every process: the loss and the gradient norm are global.
            self.counters["skipped_steps"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        logs = {k: float(v) for k, v in logs.items() if k != "loss"}
        if fp16:
            logs["scaler_skipped_steps"] = self.counters["scaler_skipped_steps"]
        return StepOutcome(float(loss_value), grad_norm, finite, logs)

    def whole_state(self) -> tuple[dict, dict, Optional[dict]]:
        """(trained weights, optimizer state, EMA state) as whole tensors, for the main process
        to save; under FSDP every process takes part in gathering them."""
        if self.sharded:
            names = fsdp_state.parameter_names(self.module, self.parameters)
            weights = fsdp_state.gather_weights(self.module, names)
            optimizer = fsdp_state.gather_optimizer_state(self.module, self.optimizer.optimizer, names)
            return weights, optimizer, fsdp_state.gather_ema_state(self.ema) if self.ema is not None else None
        if not self.accelerator.is_main_process:
            return {}, {}, None
        return trained_weights(self.stage), self.optimizer.state_dict(), self.ema.state_dict() if self.ema is not None else None

    def checkpoint(self, step: int) -> None:
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        data_position = saved_data_position(accelerator, self.batches)  # every process's (a collective call)
        weights, optimizer, ema = self.whole_state()
        stage_tensors = self.stage.state_tensors() if self.sharded or accelerator.is_main_process else {}
        if accelerator.is_main_process:
            state = TrainingState(
                step=step,
                weights=weights,
                optimizer=optimizer,
                lr_scheduler=self.lr_scheduler.state_dict(),
                data_position=data_position,
                ema=ema,
                counters={**self.counters, "stage": self.stage.state()},
                rng=capture_rng(),
                stage_tensors=stage_tensors,
            )
            save_checkpoint(state, self.output_dir / "checkpoints", self.config.train.keep_last)
        accelerator.wait_for_everyone()

    def exported_stage(self):
        """A context in which the main process's stage holds the weights to validate and export
        (EMA's when there is an EMA): the stage itself with EMA swapped in, or under FSDP an
        unsharded copy of it holding the gathered weights (every process takes part in gathering)."""
        if not self.sharded:
            return EMASwap(self.ema, self.parameters), self.stage
        weights = fsdp_state.export_weights(self.module, self.parameters, self.ema)
        if self.accelerator.is_main_process:
            if self.whole_stage is None:
                with torch.random.fork_rng():  # building it draws initial weights; the run's randomness stays
                    self.whole_stage = build_stage(self.stage.context)
            load_trained_weights(self.whole_stage, weights)
        return contextlib.nullcontext(), self.whole_stage

    def evaluate(self, step: int, reporter: Reporter) -> None:
        weights_in_place, stage = self.exported_stage()
        if self.accelerator.is_main_process:
            with weights_in_place, torch.no_grad():
                metrics = stage.evaluate(step)
            if metrics:
                reporter.log(step, metrics)
        self.accelerator.wait_for_everyone()

    def export(self, reporter: Reporter) -> Optional[Path]:
        """The stage's product, written by the main process with the EMA weights in place."""
        path = None
        weights_in_place, stage = self.exported_stage()
        if self.accelerator.is_main_process:
            with weights_in_place:
                path = stage.export()
            reporter.note(f"exported {path}")
        self.accelerator.wait_for_everyone()
        return path


def open_reporter(config: TrainConfig, accelerator, raw_dataset, step: int, resume: Optional[Path]) -> Reporter:
    """The run's reporter, after its opening notes: processes, global batch, precision, resume, data split."""
    reporter = Reporter(accelerator, Path(config.train.output_dir), config, start_step=step)
    world = accelerator.num_processes
    reporter.note(f"{config.stage}: {world} process(es), global batch {config.train.batch_size * config.train.grad_accum * world}, "
                  f"mixed precision {accelerator.mixed_precision}" + (f", resumed at step {step} from {resume}" if resume else ""))
    if isinstance(raw_dataset, IndexedImageDataset):
        reporter.note(f"data: {raw_dataset.split_summary(config.data.validation)}")
    if getattr(raw_dataset, "buckets", None) is not None:
        reporter.note(raw_dataset.buckets.histogram_line())
    return reporter


def train(config: TrainConfig, resume: Optional[Path] = None, open_dataset: Optional[OpenDataset] = None) -> TrainResult:
    """Trains `config.stage` for train.max_steps steps (continuing from checkpoint `resume`)."""
    accelerator = make_accelerator(config, Path(config.train.output_dir), STAGES[config.stage].find_unused_parameters)
    with leaving_together(accelerator):  # the processes end together, or an error ends the group at once
        return train_with(accelerator, config, resume, open_dataset)


def train_with(accelerator, config: TrainConfig, resume: Optional[Path], open_dataset: Optional[OpenDataset]) -> TrainResult:
    train_section = config.train
    output_dir = Path(train_section.output_dir)
    check_sharding(config, accelerator)
    rank, world = accelerator.process_index, accelerator.num_processes
    open_dataset = open_dataset or ldm_datasets(config, rank, world)
    # Data first: a bad data path fails before any model is built.
    raw_dataset = open_dataset("train")
    require_plan(config.data.buckets, raw_dataset)
    torch.manual_seed(train_section.seed)  # identical initial weights in every process
    context = StageContext(config, accelerator.device, output_dir, open_dataset, rank, world, accelerator.is_main_process)
    stage = build_stage(context)
    apply_speedups(stage, train_section)
    training_data = stage.training_data(raw_dataset)
    batches = make_batches(training_data, train_section.batch_size, train_section.seed, rank, world, config.data.num_workers)
    run = Run.prepare(config, accelerator, stage, batches)
    step = run.resume(resume) if resume is not None else 0

    reporter = open_reporter(config, accelerator, raw_dataset, step, resume)
    images_per_step = train_section.batch_size * train_section.grad_accum * world
    result = TrainResult(step=step, start_step=step, skipped_steps=run.counters["skipped_steps"])
    if isinstance(training_data, CachedLatentDataset):
        result.cached_samples = len(training_data)
    consecutive_bad = 0
    data = iter(batches)
    run.module.train()

    while step < train_section.max_steps:
        started = time.perf_counter()
        outcome = run.train_step(data, step)
        consecutive_bad = 0 if outcome.trained else consecutive_bad + 1
        step += 1
        result.losses.append(outcome.loss)
        reporter.step(step, outcome.loss, run.lr_scheduler.get_last_lr()[0], images_per_step / (time.perf_counter() - started),
                      outcome.grad_norm, run.counters["skipped_steps"], outcome.logs)
        if consecutive_bad >= train_section.max_bad_steps:
            reporter.close()
            raise TrainingError(
                f"stopped at step {step}: {consecutive_bad} consecutive steps had a non-finite loss or gradient "
                f"(lower train.lr, check the data, or raise train.max_bad_steps); the last checkpoint is intact"
            )
        if step % train_section.save_every == 0 or step == train_section.max_steps:
            run.checkpoint(step)
        if config.validation.every and step % config.validation.every == 0 and step < train_section.max_steps:
            run.evaluate(step, reporter)

    reporter.steps_done()
    run.evaluate(step, reporter)
    result.export_path = run.export(reporter)
    result.data = data_totals(raw_dataset, accelerator)
    reporter.data(step, result.data, result.cached_samples)
    reporter.close()
    result.step = step
    result.skipped_steps = run.counters["skipped_steps"]
    result.scaler_skipped_steps = run.counters["scaler_skipped_steps"]
    return result


def data_totals(dataset, accelerator) -> DataStats:
    """The dataset's counts (read, converted, skipped) summed over the processes. Each process
    counts a sample once; with several processes and more than one epoch, a sample that two
    processes read in different epochs is counted by both (known limit: the sum may be high)."""
    stats = getattr(dataset, "stats", None) or DataStats()
    totals = accelerator.reduce(stats.totals().to(accelerator.device), reduction="sum")
    return DataStats.from_totals(totals)


