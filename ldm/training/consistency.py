"""Latent consistency distillation's arithmetic (Luo et al. 2023), apart from the stage:
the skipping-step DDIM solver on the teacher, the boundary-condition scalings, the
pseudo-Huber distance. Scalings and solver timesteps are those diffusers' LCMScheduler
samples with, so a student trained here samples with `--sampler lcm` unchanged."""

from __future__ import annotations

import torch

SIGMA_DATA = 0.5  # the data's assumed std in the boundary scalings (Song et al.'s consistency models)


def boundary_scalings(timesteps: torch.Tensor, timestep_scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out), each (B, 1, 1, 1): f(x, t) = c_skip x + c_out x0(x, t). At t = 0 c_skip
    is 1 and c_out 0, so the student is the identity on clean latents."""
    scaled = timesteps.float() * timestep_scaling
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


def clean_and_noise(output: torch.Tensor, noisy: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str):
    """(x0, eps) implied by a denoiser `output` (eps or v) at noisy latents `noisy`;
    alpha_bar (B, 1, 1, 1) is the cumulative alpha of each sample's timestep."""
    signal, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":
        return signal * noisy - sigma * output, signal * output + sigma * noisy
    return (noisy - sigma * output) / signal, output


class SkippingSolver:
    """The teacher's DDIM step from t_n to t_n - k over the `skip`-spaced timesteps
    (k - 1, 2k - 1, ..., T - 1: LCM's 50 "original" steps for k = 20 of T = 1000), and the
    boundary-condition form of the student's output. ldm.training.flow_consistency's
    FlowSkippingSolver is the same interface (ode_step, boundary) for a flow teacher."""

    def __init__(self, alpha_bars: torch.Tensor, skip: int, prediction_type: str = "epsilon", timestep_scaling: float = 10.0):
        self.alpha_bars = alpha_bars.float()  # (T,) the schedule's cumulative alphas (DiscreteDDPM.alpha_bars)
        self.skip = skip
        self.prediction_type = prediction_type  # what outputs are: "epsilon" or "v_prediction"
        self.timestep_scaling = timestep_scaling
        total = len(alpha_bars)
        self.timesteps = torch.arange(1, total // skip + 1) * skip - 1  # (N,)

    def alpha_bar(self, timesteps: torch.Tensor, device) -> torch.Tensor:
        return self.alpha_bars[timesteps.cpu()].to(device)[:, None, None, None]  # (B, 1, 1, 1)

    def previous(self, timesteps: torch.Tensor) -> torch.Tensor:
        return (timesteps - self.skip).clamp(min=0)

    def step(self, x0: torch.Tensor, eps: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """DDIM (eta 0): the latents at `previous` that the clean estimate and noise imply."""
        alpha_bar = self.alpha_bar(previous, x0.device)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps

    def ode_step(self, output: torch.Tensor, noisy: torch.Tensor, start: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The DDIM step from `start` to `previous` of a (guided) denoiser output at `noisy`."""
        x0, eps = clean_and_noise(output.float(), noisy, self.alpha_bar(start, noisy.device), self.prediction_type)
        return self.step(x0, eps, previous)

    def boundary(self, output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The consistency function f(x, t) = c_skip x + c_out x0(x, t) of a denoiser output."""
        x0, _ = clean_and_noise(output.float(), noisy, self.alpha_bar(timesteps, noisy.device), self.prediction_type)
        c_skip, c_out = (c.to(noisy.device) for c in boundary_scalings(timesteps, self.timestep_scaling))
        return c_skip * noisy + c_out * x0


def pseudo_huber(prediction: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(d^2 + c^2) - c, averaged: L2-like near zero, L1-like for outliers (Song & Dhariwal 2023)."""
    difference = prediction.float() - target.float()
    return (torch.sqrt(difference**2 + c**2) - c).mean()


def blend_into(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    """target = decay * target + (1 - decay) * source, parameter by parameter (the EMA target network)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s.detach(), 1.0 - decay)
