"""One thread owns the model and runs jobs from a bounded queue, one at a time: the model is
never used by two requests at once, and a full queue answers at once (Busy) instead of
letting requests pile up."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ldm.diffusion.sampling import StopSampling
from ldm.errors import LdmError
from ldm.pipeline import GenerationResult, Pipeline
from ldm.pipeline.modes import task_for
from ldm.server.a1111 import Job
from ldm.server.progress import Progress
from ldm.server.work import Speed, check_job_steps, check_work, estimate_job, measure_speed
from ldm.settings import DEFAULT_LIMITS, GenerationError, Limits

log = logging.getLogger("ldm.serve")


class Busy(LdmError):
    """The queue is full; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy ({retry_after} s of work queued): try again later")
        self.retry_after = retry_after


class ClientGone(LdmError):
    """The job was stopped between two steps because its client disconnected: nobody is
    left to receive its images."""


@dataclass(frozen=True)
class ModelEntry:
    title: str  # what /sd-models lists and /options selects
    path: Path


@dataclass
class Outcome:
    result: GenerationResult
    interrupted: bool
    timestamp: str


@dataclass
class _Task:
    run: Callable[[], object]
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)  # its client left


class Worker:
    """Runs generation and model switches in submission order on its own thread."""

    def __init__(
        self,
        pipeline: Pipeline,
        model: ModelEntry,
        models: list[ModelEntry],
        loader: Callable[[Path], Pipeline],
        limits: Limits = DEFAULT_LIMITS,
        max_queue: int = 8,
        max_work_seconds: Optional[float] = None,
        measure: Callable[[Pipeline], Speed] = measure_speed,
    ):
        """`max_work_seconds`: the most work one request may ask for, estimated from this
        machine's speed (`measure`d for each model as it loads); None: no limit."""
        self.pipeline, self.model, self.models = pipeline, model, models
        self.loader, self.limits = loader, limits
        self.max_work_seconds, self._measure = max_work_seconds, measure
        self.speed = measure(pipeline) if max_work_seconds is not None else None
        self.progress = Progress()
        self._queue: queue.Queue[Optional[_Task]] = queue.Queue(maxsize=max_queue)
        self._interrupt = threading.Event()
        self._running: Optional[_Task] = None
        self._seconds_per_job = 1.0  # running mean, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="ldm-serve-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submitting

    def submit(self, run: Callable[[], object]) -> Future:
        """Queues `run`; Busy when the queue is full. A cancelled future (its client left
        before it started) is skipped."""
        task = _Task(run)
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            raise Busy(self.retry_after()) from None
        return task.future

    def generate(self, job: Job) -> Future:
        """Queues `job`; GenerationError, before any work, when it asks for more than the work
        limit or for steps that would take too long."""
        check_job_steps(self.pipeline, job, self.limits)
        if self.speed is not None:
            check_work(estimate_job(self.speed, self.pipeline, job), self.max_work_seconds)
        return self.submit(lambda: self._generate(job))

    def switch_model(self, title: str) -> Future:
        entry = next((m for m in self.models if m.title == title), None)
        if entry is None:
            known = ", ".join(m.title for m in self.models)
            raise GenerationError(f"unknown model {title!r}; known models: {known}")
        return self.submit(lambda: self._switch(entry))

    def interrupt(self) -> None:
        """Stops the running job (not the queued ones), as A1111 does."""
        if self.progress.busy:
            self._interrupt.set()

    def abandon(self, future: Future) -> None:
        """The client of `future` left: a queued job is skipped, the running one stops at its
        next step (other jobs go on)."""
        if future.cancel():
            return
        running = self._running  # set before the future turns running: cancel() failed, so it is there
        if running is not None and running.future is future:
            running.abandoned.set()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def retry_after(self) -> int:
        return max(1, math.ceil((self.queued + 1) * self._seconds_per_job))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            self._running = task
            if not task.future.set_running_or_notify_cancel():
                self._running = None
                log.info("job skipped: its client disconnected while it waited")
                continue
            started = time.monotonic()
            try:
                task.future.set_result(task.run())
            except ClientGone:
                log.info("job stopped: its client disconnected")
                task.future.set_exception(ClientGone())
            except BaseException as error:  # the thread outlives every job; the caller sees the error
                if not isinstance(error, GenerationError):
                    log.exception("job failed")
                task.future.set_exception(error)
            finally:
                self._running = None
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - started)

    def _generate(self, job: Job) -> Outcome:
        self._interrupt.clear()
        self.progress.begin(job.mode, job.iterations)
        result, interrupted = GenerationResult(images=[]), False
        try:
            for iteration in range(job.iterations):
                self.progress.at_iteration(iteration)
                self._check_abandoned()
                if self._interrupt.is_set():
                    interrupted = True
                    break
                # An interrupt during this run ends its sampling early and the pipeline
                # decodes the pictures as they stand (as A1111 does); later runs are not started.
                part = self._run(job, iteration)
                result.images += part.images
                result.parameters += part.parameters
                result.notes += [note for note in part.notes if note not in result.notes]
                if self._interrupt.is_set():
                    interrupted = True
                    break
        finally:
            self.progress.end(interrupted)
        return Outcome(result, interrupted, self.progress.timestamp)

    def _run(self, job: Job, iteration: int) -> GenerationResult:
        settings = self.pipeline.request(job.settings_of(iteration), {})
        options = {"callback": self._on_step, "progress": False, "limits": self.limits}
        task = task_for(job.mode, job.image, job.mask, settings)
        return self.pipeline.run(task, settings, **options)

    def _on_step(self, info) -> None:
        self.progress.at_step(info.step, info.total, info.latents)
        self._check_abandoned()
        if self._interrupt.is_set():
            raise StopSampling()

    def _check_abandoned(self) -> None:
        running = self._running
        if running is not None and running.abandoned.is_set():
            raise ClientGone()

    def _switch(self, entry: ModelEntry) -> None:
        if entry == self.model:
            return
        pipeline = self.loader(entry.path)  # the old model serves until the new one is whole
        speed = self._measure(pipeline) if self.speed is not None else None
        self.pipeline, self.model, self.speed = pipeline, entry, speed
        log.info("model %s loaded from %s", entry.title, entry.path)
