"""Samplers by name: each is a diffusers scheduler built from the model's scheduler config,
behind one small wrapper (`Sampler`) that the loop, the pipeline and inpainting call: where
to start, what the denoiser reads at a step, how clean latents are noised to a timestep, and
the step itself. Those belong to the solver (Euler works in sigma space and scales its
latents; DDIM does not), so no caller touches the scheduler's own API."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ldm.diffusion.schedule import is_flow
from ldm.errors import LdmError

if TYPE_CHECKING:  # torch is not imported at run time: `--help` reads SAMPLER_NAMES from here
    import torch


def _registry() -> dict[str, tuple[Any, dict, bool]]:
    """name -> (scheduler class, config overrides, whether its step() takes a generator)."""
    # Imported lazily: diffusers takes seconds to import, and `--help` must not wait.
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        LCMScheduler,
        UniPCMultistepScheduler,
    )

    dpm = {"algorithm_type": "dpmsolver++", "solver_order": 2}
    return {
        "ddpm": (DDPMScheduler, {}, True),
        "ddim": (DDIMScheduler, {}, True),
        "euler": (EulerDiscreteScheduler, {}, True),
        "euler-a": (EulerAncestralDiscreteScheduler, {}, True),
        "heun": (HeunDiscreteScheduler, {}, False),
        "dpm++2m": (DPMSolverMultistepScheduler, {**dpm, "use_karras_sigmas": False}, True),
        "dpm++2m-karras": (DPMSolverMultistepScheduler, {**dpm, "use_karras_sigmas": True}, True),
        "unipc": (UniPCMultistepScheduler, {}, False),
        # Latent consistency models: each step jumps to x0 and re-noises to the next timestep.
        "lcm": (LCMScheduler, {}, True),
    }


def _flow_registry(scheduler_config: dict) -> dict[str, tuple[Any, dict, bool]]:
    """The solvers of flow models (ldm.diffusion.process.RectifiedFlow): diffusers' flow-matching
    Euler and Heun, DPM-Solver++ and UniPC on flow sigmas (x_s = (1 - s) x0 + s e), and LCM's
    flow form for students distilled from a flow teacher (ldm.training.flow_consistency)."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        FlowMatchHeunDiscreteScheduler,
        FlowMatchLCMScheduler,
        UniPCMultistepScheduler,
    )

    flow_sigmas = {"use_flow_sigmas": True, "flow_shift": scheduler_config.get("shift", 1.0)}
    return {
        "flow-euler": (FlowMatchEulerDiscreteScheduler, {}, False),
        "flow-heun": (FlowMatchHeunDiscreteScheduler, {}, False),
        "flow-dpm++2m": (DPMSolverMultistepScheduler, {**flow_sigmas, "algorithm_type": "dpmsolver++", "solver_order": 2}, False),
        "flow-unipc": (UniPCMultistepScheduler, flow_sigmas, False),
        # x0 = x - s v, re-noised to the next level with fresh noise: the same name as the eps/v LCM.
        "lcm": (FlowMatchLCMScheduler, {}, True),
    }


# The names, without importing diffusers (for argument parsing and error messages): those of
# the discrete DDPM family (eps and v models) and those of flow models. `lcm` is in both: the
# model's parameterisation picks LCMScheduler or FlowMatchLCMScheduler.
DDPM_SAMPLER_NAMES = ("ddpm", "ddim", "euler", "euler-a", "heun", "dpm++2m", "dpm++2m-karras", "unipc", "lcm")
FLOW_SAMPLER_NAMES = ("flow-euler", "flow-heun", "flow-dpm++2m", "flow-unipc", "lcm")
SAMPLER_NAMES = DDPM_SAMPLER_NAMES + tuple(name for name in FLOW_SAMPLER_NAMES if name not in DDPM_SAMPLER_NAMES)
DEFAULT_SAMPLER = "dpm++2m"
DEFAULT_FLOW_SAMPLER = "flow-euler"


class UnknownSampler(LdmError, ValueError):
    pass


def check_sampler_name(name: str) -> str:
    if name not in SAMPLER_NAMES:
        raise UnknownSampler(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLER_NAMES)}")
    return name


def samplers_for(scheduler_config: dict) -> tuple[str, ...]:
    """The sampler names that apply to a model's parameterisation."""
    return FLOW_SAMPLER_NAMES if is_flow(scheduler_config) else DDPM_SAMPLER_NAMES


def default_sampler(scheduler_config: dict) -> str:
    return DEFAULT_FLOW_SAMPLER if is_flow(scheduler_config) else DEFAULT_SAMPLER


@dataclass
class SamplerStep:
    prev_sample: Any  # (B, C, h, w): the latents after the step
    pred_original_sample: Any  # (B, C, h, w) the step's estimate of the clean latents, or None


@dataclass
class Sampler:
    """A diffusers scheduler of the discrete DDPM family (ldm.diffusion.process.DiscreteDDPM);
    `FlowSampler` is a flow model's."""

    scheduler: Any  # a fresh diffusers scheduler: they keep per-run state
    takes_generator: bool  # stochastic steps draw their noise from the per-image generators

    @property
    def order(self) -> int:
        """Model evaluations per step (Heun: 2), as the loop counts them (and A1111's prompt editing)."""
        return self.scheduler.order

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The first latents of a run from pure noise: unit-variance `noise` scaled to the
        sampler's largest noise level (1 in DDPM space, sqrt(sigma_max^2 + 1) in sigma space)."""
        return noise * self.scheduler.init_noise_sigma

    def model_input(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        """What the denoiser reads at `timestep`: the latents, brought back from the sampler's
        space to the process's (sigma-space samplers divide by sqrt(sigma^2 + 1))."""
        return self.scheduler.scale_model_input(latents, timestep)

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Clean latents `x0` (B, C, h, w) noised with `noise` to `timesteps` ((B,) or (1,)) in
        the sampler's space: img2img's start and inpainting's known region."""
        return self.scheduler.add_noise(x0, noise, timesteps)

    def step(self, model_output, timestep, latents, generators) -> "SamplerStep":
        extra = {"generator": generators} if self.takes_generator else {}
        out = self.scheduler.step(model_output, timestep, latents, **extra, return_dict=True)
        # LCM calls its clean-latents estimate `denoised`; the others `pred_original_sample`,
        # except the multistep solvers, which keep theirs in their history.
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None:
            x0 = getattr(out, "denoised", None)
        return SamplerStep(out.prev_sample, x0 if x0 is not None else self._solver_data_prediction())

    def _solver_data_prediction(self):
        """DPM-Solver++ and UniPC (predict_x0) solve for the clean latents: the step's estimate
        is the newest entry of their `model_outputs`. None for solvers that keep noise there."""
        scheduler = self.scheduler
        outputs = getattr(scheduler, "model_outputs", None)
        solves_for_data = getattr(scheduler.config, "algorithm_type", None) in ("dpmsolver++", "sde-dpmsolver++")
        if not outputs or outputs[-1] is None or not (solves_for_data or getattr(scheduler, "predict_x0", False)):
            return None
        return outputs[-1]

    def set_timesteps(self, steps: int, device=None, strength: float = 1.0):
        """The timesteps to run: the whole `steps`-step schedule, or for strength < 1 only
        its last `kept_steps(steps, strength)` steps, as diffusers' img2img and inpaint
        pipelines cut it (so results match theirs for every sampler). May be empty (strength ~0)."""
        scheduler = self.scheduler
        scheduler.set_timesteps(steps, device=device)
        kept = self.kept_steps(steps, strength)
        # Heun (order 2) lists its timesteps but the first twice; diffusers cuts at
        # (steps - kept) * order, and so do we, for parity.
        start = (steps - kept) * scheduler.order
        # The solver's step counter (and renoise) must start at the cut, not at 0.
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]

    @staticmethod
    def kept_steps(steps: int, strength: float) -> int:
        """How many of `steps` run at `strength`: int(steps * strength), as diffusers' SD 1/2
        and SDXL img2img and inpaint pipelines count them."""
        return min(int(steps * strength), steps)

    @staticmethod
    def strength_keeping(kept: int, steps: int) -> float:
        """The strength at which `kept_steps(steps, strength)` is exactly `kept` (0 < kept < steps),
        half a step clear of the float rounding of either side."""
        return (kept + 0.5) / steps

    def switch_timestep(self, switch: float) -> int:
        """The training timestep where a refiner takes over at `switch` (a share of the way
        from noise to picture), as diffusers' denoising_end / denoising_start compute it."""
        train = self.scheduler.config.num_train_timesteps
        return int(round(train - switch * train))

    def before_switch(self, timesteps: torch.Tensor, switch: float) -> torch.Tensor:
        """The first part of `timesteps`, down to the switch: what the base model runs."""
        return timesteps[: int((timesteps >= self.switch_timestep(switch)).sum())]

    def after_switch(self, steps: int, switch: float, device=None) -> torch.Tensor:
        """The rest of the `steps`-step schedule after the switch: what the refiner runs, with
        the solver's counter set there (a second-order solver's doubled step kept whole)."""
        scheduler = self.scheduler
        scheduler.set_timesteps(steps, device=device)
        kept = int((scheduler.timesteps < self.switch_timestep(switch)).sum())
        if scheduler.order == 2 and kept % 2 == 0:
            kept += 1
        start = len(scheduler.timesteps) - kept
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]


class FlowSampler(Sampler):
    """A flow model's solver: it starts from the unit noise itself (s = 1), the denoiser reads
    the latents as they are, and renoising is the straight line (1 - s) x0 + s e."""

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    @staticmethod
    def kept_steps(steps: int, strength: float) -> int:
        """How many of `steps` run at `strength`: the steps less int(steps - steps * strength),
        as diffusers' SD3 (and other flow) img2img and inpaint pipelines count them (one more
        than int(steps * strength) where that is not whole)."""
        return steps - int(max(steps - steps * strength, 0))

    @staticmethod
    def strength_keeping(kept: int, steps: int) -> float:
        return (kept - 0.5) / steps

    def model_input(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        return latents

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        scheduler = self.scheduler
        if hasattr(scheduler, "scale_noise"):  # the flow-matching Euler and Heun
            return scheduler.scale_noise(x0, timesteps, noise)
        return scheduler.add_noise(x0, noise, timesteps)  # DPM-Solver/UniPC on flow sigmas: alpha = 1 - s


class UnsuitableSampler(UnknownSampler):
    pass


def check_sampler_fits(name: str, scheduler_config: dict) -> str:
    """`name`, if it is a sampler of the model's parameterisation; else UnsuitableSampler
    listing those that are (a DDPM sampler on a flow model, or the reverse)."""
    check_sampler_name(name)
    suitable = samplers_for(scheduler_config)
    if name not in suitable:
        kind = "a flow-matching" if is_flow(scheduler_config) else "an eps/v"
        raise UnsuitableSampler(f"sampler {name!r} does not apply to {kind} model; its samplers: {', '.join(suitable)}")
    return name


def make_sampler(name: str, scheduler_config: dict) -> Sampler:
    """The sampler called `name`, on the model's noise schedule; UnsuitableSampler when it is
    not one of the model's parameterisation (a DDPM sampler on a flow model, or the reverse)."""
    check_sampler_fits(name, scheduler_config)
    if is_flow(scheduler_config):
        scheduler_class, overrides, takes_generator = _flow_registry(scheduler_config)[name]
        # A flow config also holds the training density (and `shift` or `prediction_type`,
        # which not every flow solver takes): each gets only its own keys.
        accepted = inspect.signature(scheduler_class.__init__).parameters
        own = {key: value for key, value in scheduler_config.items() if key in accepted}
        return FlowSampler(scheduler_class.from_config(own, **overrides), takes_generator)
    scheduler_class, overrides, takes_generator = _registry()[name]
    return Sampler(scheduler_class.from_config(scheduler_config, **overrides), takes_generator)
