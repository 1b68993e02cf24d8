"""What the worker is doing now, for GET /sdapi/v1/progress: steps, ETA and a cheap preview."""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
from PIL import Image

# Stable Diffusion's 4 latent channels -> RGB, a linear fit of the VAE's decoder (the "cheap
# approximation" of A1111's live previews). A preview per step must cost next to nothing: a
# VAE decode would cost as much as a denoising step.
LATENT_TO_RGB = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)


def latent_preview(latents) -> Image.Image:
    """One image's latents (C, h, w), scaled as the denoiser sees them -> a small RGB picture
    (h x w). Models with other than 4 latent channels show their first three as RGB."""
    array = latents.detach().float().cpu().numpy()  # (C, h, w)
    if array.shape[0] == LATENT_TO_RGB.shape[0]:
        rgb = np.einsum("chw,cr->hwr", array, LATENT_TO_RGB)  # (h, w, 3)
    else:
        rgb = np.resize(array, (3, *array.shape[1:])).transpose(1, 2, 0)  # (h, w, 3)
    rgb = np.nan_to_num(rgb)
    return Image.fromarray(((rgb.clip(-1, 1) + 1) * 127.5).astype(np.uint8))


class Progress:
    """Thread-safe state of the running job; the worker writes, HTTP handlers read."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: Optional[str] = None
        self.timestamp = "0"
        self._started = 0.0
        self._iterations = 0
        self._iteration = 0
        self._step = 0
        self._steps = 0
        self._latents = None  # (C, h, w) of the first image after the last step
        self.interrupted = False
        self.jobs_done = 0

    def begin(self, job: str, iterations: int) -> None:
        with self._lock:
            self._job, self._iterations, self._iteration = job, iterations, 0
            self._step = self._steps = 0
            self._latents, self.interrupted = None, False
            self._started = time.monotonic()
            self.timestamp = time.strftime("%Y%m%d%H%M%S")

    def at_iteration(self, iteration: int) -> None:
        with self._lock:
            self._iteration, self._step = iteration, 0

    def at_step(self, step: int, steps: int, latents) -> None:
        with self._lock:
            self._step, self._steps = step + 1, steps
            self._latents = latents[0].detach().to("cpu", copy=True)  # the worker reuses its tensor

    def end(self, interrupted: bool) -> None:
        with self._lock:
            self._job, self.interrupted = None, interrupted
            self.jobs_done += 1

    @property
    def busy(self) -> bool:
        return self._job is not None

    def fraction(self) -> float:
        if self._job is None or not self._iterations:
            return 0.0
        within = self._step / self._steps if self._steps else 0.0
        return min(1.0, (self._iteration + within) / self._iterations)

    def snapshot(self, queued: int, with_image: bool = True) -> dict:
        """A1111's progress layout (plus `queued`: jobs waiting behind this one)."""
        with self._lock:
            fraction = self.fraction()
            elapsed = time.monotonic() - self._started if self._job else 0.0
            eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
            preview = latent_preview(self._latents) if with_image and self._job and self._latents is not None else None
            state = {
                "skipped": False,
                "interrupted": self.interrupted,
                "job": self._job or "",
                "job_count": self._iterations if self._job else 0,
                "job_timestamp": self.timestamp,
                "job_no": self._iteration,
                "sampling_step": self._step,
                "sampling_steps": self._steps,
            }
        return {"progress": fraction, "eta_relative": eta, "state": state, "preview": preview, "queued": queued}
