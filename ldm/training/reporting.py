"""What a run reports while it trains: a progress bar (loss, it/s, ETA), TensorBoard
through accelerate, and OUTPUT/log.jsonl with one plain JSON object per logged step.

A resumed run replays the steps after its checkpoint: their rows are cut from log.jsonl and
TensorBoard purges their events, so each step is logged once."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ldm.config import to_dict
from ldm.training.config import TrainConfig


class Reporter:
    def __init__(self, accelerator, output_dir: Path, config, start_step: int = 0):
        self.accelerator = accelerator
        self.every = config.train.log_every
        self.main = accelerator.is_main_process
        self.show = self.main and config.train.progress  # notes and the bar on the screen
        self.started = time.time()
        self.log_file = None
        if self.main:
            output_dir.mkdir(parents=True, exist_ok=True)
            log_path = output_dir / "log.jsonl"
            # purge_step: TensorBoard drops the events from that step on (the replayed ones).
            init_kwargs = {}
            if start_step:
                truncate_log(log_path, start_step)
                init_kwargs = {"tensorboard": {"purge_step": start_step + 1}}
            self.log_file = open(log_path, "a")
            accelerator.init_trackers("train", config=flat_hparams(config), init_kwargs=init_kwargs)
        self.bar = tqdm(
            total=config.train.max_steps, initial=start_step, desc=config.stage, disable=not self.show, dynamic_ncols=True
        )

    def step(self, step: int, loss: float, lr: float, images_per_s: float, grad_norm, skipped: int, extra: dict) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)  # shown by the update: this step's loss
        self.bar.update(1)
        if step % self.every == 0 or step == self.bar.total:
            row = {"step": step, "loss": loss, "lr": lr, "images_per_s": images_per_s, "skipped_steps": skipped, **extra}
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            self.log(step, row)

    def log(self, step: int, values: dict) -> None:
        if not self.main:
            return
        values = {k: v for k, v in values.items() if k != "step"}
        self.accelerator.log(values, step=step)
        self.log_file.write(json.dumps({"step": step, "time": round(time.time() - self.started, 3), **values}) + "\n")
        self.log_file.flush()

    def data(self, step: int, stats, cached_samples: int = 0) -> None:
        """What the data layer read, converted and skipped (ldm.data.DataStats), as one row
        of counts (TensorBoard: data/...) and a one-line note (data_summary)."""
        counts = {"data/images": stats.seen, "data/converted": sum(stats.converted.values()), "data/skipped": sum(stats.skipped.values())}
        counts.update({f"data/converted/{reason.replace(' ', '_')}": n for reason, n in stats.converted.items()})
        counts.update({f"data/skipped/{reason.replace(' ', '_')}": n for reason, n in stats.skipped.items()})
        self.log(step, counts)
        self.note(f"data: {data_summary(stats, cached_samples)}")

    def note(self, message: str) -> None:
        if self.main:
            if self.show:
                tqdm.write(message, file=sys.stderr)  # above the bar while it runs
            self.log_file.write(json.dumps({"note": message}) + "\n")
            self.log_file.flush()

    def steps_done(self) -> None:
        """Closes the progress bar: the notes after the last step (export, data) then print
        alone, not each followed by a copy of the finished bar."""
        self.bar.close()

    def close(self) -> None:
        self.bar.close()
        if self.log_file is not None and not self.log_file.closed:
            self.log_file.close()


def flat_hparams(config: TrainConfig) -> dict:
    """Scalars for TensorBoard's hparams (lists become strings)."""
    flat = {}

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, (int, float, str, bool)):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    walk("", to_dict(config))
    return flat


def data_summary(stats, cached_samples: int = 0) -> str:
    """What a run read: '24 images, 0 converted, 0 skipped' (ldm.data.DataStats); a run that
    trained on the latent cache says so, rather than '0 images' when it decoded none."""
    if not cached_samples:
        return stats.summary()
    cached = f"trained on the cached latents of {cached_samples} samples"
    return f"{stats.summary()}; {cached}" if stats.seen else f"no image read, {cached}"


def truncate_log(path: Path, step: int) -> None:
    """Cuts log.jsonl before its first row of a step after `step` (what a resume from the
    checkpoint of `step` replays). The file is replaced whole (written aside, then renamed):
    a crash leaves the old log or the new one, never half of either."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row_step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            row_step = None  # a line cut short by the kill
        if isinstance(row_step, int) and row_step > step:
            break
        if line.endswith("\n"):
            kept.append(line)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
