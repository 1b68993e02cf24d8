"""Latent consistency distillation along a flow-matching teacher's ODE (x_s = (1 - s) x0 + s e,
velocity v = e - x0), the flow form of ldm.training.consistency's DDIM solver and scalings.

The consistency function is the clean estimate the velocity implies, f(x, s) = x - s v(x, s):
at s = 0 it is x itself (the boundary condition holds exactly, with no c_skip/c_out scalings),
and it is the x0 diffusers' FlowMatchLCMScheduler computes at each step, so a student trained
here samples with `--sampler lcm` unchanged. The teacher's step from s to s' is Euler's,
x + (s' - s) v, which on a straight path is DDIM's (re-noising x0 = x - s v with e = x + (1 - s) v)."""

from __future__ import annotations

import torch

from ldm.diffusion.process import RectifiedFlow


def _per_sample(levels: torch.Tensor) -> torch.Tensor:
    return levels.float()[:, None, None, None]  # (B,) -> (B, 1, 1, 1)


class FlowSkippingSolver:
    """The teacher's Euler step from level s_n to s_(n-1) over N = T / skip levels
    s_n = shift(n / N), n = 1..N (the process's own resolution shift), and s_0 = 0 (clean)."""

    def __init__(self, process: RectifiedFlow, skip: int):
        count = process.num_train_timesteps // skip
        grid = torch.arange(1, count + 1, dtype=torch.float64) / count  # (N,)
        self.levels = torch.cat([torch.zeros(1), process.shifted(grid).float()])  # (N + 1,), s_0 = 0
        self.timesteps = self.levels[1:]  # (N,) the levels training starts from

    def previous(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) the grid level below each of `timesteps` (which are grid levels themselves)."""
        index = torch.searchsorted(self.levels, timesteps.detach().float().cpu())
        return self.levels[index - 1].to(timesteps.device)

    def ode_step(self, velocity: torch.Tensor, noisy: torch.Tensor, start: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Euler on dx/ds = v: the latents at `previous` (B, C, h, w)."""
        return noisy + _per_sample(previous - start) * velocity.float()

    def boundary(self, velocity: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """f(x, s) = x - s v: the clean latents the velocity implies (x itself at s = 0)."""
        return noisy - _per_sample(timesteps) * velocity.float()
