"""The noise process: how training noises clean latents and what the denoiser learns from them.

Everything that depends on the parameterisation lives here, so that a new one (flow matching:
x_t = (1 - s) x0 + s eps, a velocity target eps - x0, logit-normal s with a resolution shift)
is one more class beside `DiscreteDDPM` (`RectifiedFlow`), not a branch in every training stage:

- `sample_timesteps(b, randomness)`: the training timesteps of a batch (the process's own density)
- `timesteps_at(levels)`: the timesteps at fractions of the way from clean (0) to pure noise (1),
  for stages that draw their own density (ControlNet's high-noise bias)
- `noised(x0, noise, t)`: the latents the denoiser reads at t
- `target(x0, noise, t)`: what it is trained to predict there
- `loss_weights(t, min_snr_gamma)`: each sample's weight in the loss
- `model_time(t)`: the time input the denoiser gets for t

Sampling goes through the chosen sampler (ldm.diffusion.samplers.Sampler: start, model_input,
renoise): how latents are scaled at a step is the solver's business, not the process's.
"""

from __future__ import annotations

from typing import Optional, Protocol

import math

import torch

from ldm.diffusion.schedule import FLOW_PREDICTION, is_flow


class Draws(Protocol):
    """The random draws a process needs (ldm.training.batches.Randomness is one)."""

    def rand(self, shape) -> torch.Tensor: ...

    def randn(self, shape) -> torch.Tensor: ...

    def randint(self, high: int, shape) -> torch.Tensor: ...


class NoiseProcess(Protocol):
    prediction_type: str  # what the denoiser predicts, in diffusers' words ("epsilon", "v_prediction")

    def sample_timesteps(self, b: int, randomness: Draws) -> torch.Tensor: ...

    def timesteps_at(self, levels: torch.Tensor) -> torch.Tensor: ...

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor: ...

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor: ...

    def loss_weights(self, timesteps: torch.Tensor, min_snr_gamma: Optional[float]) -> torch.Tensor: ...

    def model_time(self, timesteps: torch.Tensor) -> torch.Tensor: ...


class DiscreteDDPM:
    """The discrete variance-preserving process of DDPM/Stable Diffusion: T integer timesteps,
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with a_t the cumulative product of (1 - beta), and an
    eps or v target (v = sqrt(a_t) eps - sqrt(1 - a_t) x0, Salimans & Ho 2022)."""

    def __init__(self, alpha_bars: torch.Tensor, prediction_type: str):
        self.alpha_bars = alpha_bars  # (T,) float32: ~1 at t = 0 (clean) down to ~0 at T - 1
        self.prediction_type = prediction_type

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "DiscreteDDPM":
        """The process of a diffusers scheduler config (the model's `scheduler_config`)."""
        # Imported lazily: diffusers takes seconds to import. Its DDPM scheduler computes the
        # beta schedules (linear, scaled, cosine, zero-terminal-SNR rescaling) the samplers use.
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(config)
        return cls(scheduler.alphas_cumprod, scheduler.config.prediction_type)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alpha_bars)

    def sample_timesteps(self, b: int, randomness: Draws) -> torch.Tensor:
        """(b,) timesteps, uniform over the schedule."""
        return randomness.randint(self.num_train_timesteps, (b,))

    def timesteps_at(self, levels: torch.Tensor) -> torch.Tensor:
        """(b,) timesteps for noise levels in [0, 1]: level 1 is the last timestep."""
        total = self.num_train_timesteps
        return (levels * total).long().clamp(max=total - 1)

    def _scales(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(a_t), sqrt(1 - a_t)), each (B, 1, ..., 1) in `like`'s device and dtype."""
        alpha_bar = self.alpha_bars.to(device=like.device, dtype=like.dtype)[timesteps.to(like.device)].flatten()
        alpha_bar = alpha_bar.view(-1, *[1] * (like.dim() - 1))  # (B, 1, 1, 1)
        return alpha_bar**0.5, (1 - alpha_bar) ** 0.5

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        signal, sigma = self._scales(timesteps, x0)
        return signal * x0 + sigma * noise  # (B, C, h, w)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            signal, sigma = self._scales(timesteps, x0)
            return signal * noise - sigma * x0  # (B, C, h, w)
        return noise

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) signal-to-noise ratio a_t / (1 - a_t), float32 on the CPU."""
        alpha_bar = self.alpha_bars[timesteps.cpu()].float()
        return (alpha_bar**0.5 / (1 - alpha_bar) ** 0.5) ** 2

    def loss_weights(self, timesteps: torch.Tensor, min_snr_gamma: Optional[float]) -> torch.Tensor:
        """(B,) weights: 1, or with `min_snr_gamma` min(SNR, gamma) expressed for the predicted
        target (Hang et al. 2023): / SNR for eps, / (SNR + 1) for v. Zero-terminal-SNR makes SNR 0
        at the last step: clamped for eps."""
        if not min_snr_gamma:
            return torch.ones(len(timesteps), device=timesteps.device)
        snr = self.snr(timesteps)
        clipped = torch.minimum(snr, torch.full_like(snr, min_snr_gamma))
        weights = clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr.clamp(min=1e-8)
        return weights.to(timesteps.device)

    def model_time(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The integer timestep itself: the denoiser embeds it as it is."""
        return timesteps




class RectifiedFlow:
    """Flow matching on straight paths (rectified flow, as SD3 trains): x_s = (1 - s) x0 + s e
    for a noise level s in [0, 1], a velocity target e - x0. The process's timesteps are the
    levels s themselves (float); the denoiser reads 1000 s, as diffusers' flow schedulers pass
    their timesteps. Training draws s from `timestep_sampling` (SD3, Esser et al. 2024, sec. 3.1:
    uniform, logit-normal, mode with heavy tails) and shifts it towards noise for larger images:
    s' = shift s / (1 + (shift - 1) s)."""

    prediction_type = FLOW_PREDICTION

    def __init__(self, shift: float = 1.0, timestep_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0, mode_scale: float = 1.29, loss_weighting: str = "none",
                 num_train_timesteps: int = 1000):  # fmt: skip
        self.shift = shift
        self.timestep_sampling = timestep_sampling
        self.logit_mean, self.logit_std, self.mode_scale = logit_mean, logit_std, mode_scale
        self.loss_weighting = loss_weighting
        self.num_train_timesteps = num_train_timesteps

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "RectifiedFlow":
        keys = ("shift", "timestep_sampling", "logit_mean", "logit_std", "mode_scale", "loss_weighting", "num_train_timesteps")
        return cls(**{key: config[key] for key in keys if key in config})

    def shifted(self, levels: torch.Tensor) -> torch.Tensor:
        return self.shift * levels / (1 + (self.shift - 1) * levels)

    def _unshifted_levels(self, b: int, randomness: Draws) -> torch.Tensor:
        """(b,) levels in [0, 1] from the sampling density, before the shift."""
        if self.timestep_sampling == "logit_normal":
            return torch.sigmoid(self.logit_mean + self.logit_std * randomness.randn((b,)))
        u = randomness.rand((b,))
        if self.timestep_sampling == "mode":
            return 1 - u - self.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return u

    def sample_timesteps(self, b: int, randomness: Draws) -> torch.Tensor:
        """(b,) float noise levels s, drawn from the density and shifted."""
        return self.shifted(self._unshifted_levels(b, randomness).float())

    def timesteps_at(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels in [0, 1] are this process's timesteps (shifted like its own draws)."""
        return self.shifted(levels.float().clamp(0, 1))

    def _level(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return timesteps.to(device=like.device, dtype=like.dtype).reshape(-1, *[1] * (like.dim() - 1))  # (B, 1, 1, 1)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        s = self._level(timesteps, x0)
        return (1 - s) * x0 + s * noise  # (B, C, h, w)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return noise - x0  # (B, C, h, w): the velocity d x_s / d s

    def loss_weights(self, timesteps: torch.Tensor, min_snr_gamma: Optional[float]) -> torch.Tensor:
        """(B,) SD3's weightings (diffusers' compute_loss_weighting_for_sd3): none, sigma_sqrt
        (1 / s^2) or cosmap (2 / (pi (1 - 2 s + 2 s^2))). min-SNR is a DDPM weighting: the
        config check refuses it for flow."""
        s = timesteps.float()
        if self.loss_weighting == "sigma_sqrt":
            return s.clamp(min=1e-4) ** -2.0
        if self.loss_weighting == "cosmap":
            return 2 / (math.pi * (1 - 2 * s + 2 * s**2))
        return torch.ones_like(s)

    def model_time(self, timesteps: torch.Tensor) -> torch.Tensor:
        """1000 s (num_train_timesteps s): the flow schedulers' timesteps for level s."""
        return timesteps.float() * self.num_train_timesteps


def noise_process(scheduler_config: dict) -> NoiseProcess:
    """The process a model was trained with, from its scheduler config (Components.scheduler_config)."""
    if is_flow(scheduler_config):
        return RectifiedFlow.from_scheduler_config(scheduler_config)
    return DiscreteDDPM.from_scheduler_config(scheduler_config)
