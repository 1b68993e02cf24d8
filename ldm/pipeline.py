"""Text-to-image generation on loaded components: the Python API.

    from ldm.pipeline import Pipeline
    pipe = Pipeline.load("runs/scenes/model")              # or an SD folder in diffusers format
    result = pipe.generate("a lake at dawn", cfg=7.5, steps=20, seed=7, n=2)
    result.images[0].save("lake.png")
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.samplers import DEFAULT_SAMPLER, check_sampler_name, make_sampler
from ldm.diffusion.sampling import StepInfo, denoise
from ldm.images import to_pil
from ldm.models.components import Components
from ldm.png_info import GenerationParameters
from ldm.timing import Stopwatch


class GenerationError(ValueError):
    """A request that cannot be generated; the message says which value is wrong."""


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: list[GenerationParameters] = field(default_factory=list)  # one per image
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, sampling, decode

    @property
    def seeds(self) -> list[int]:
        return [p.seed for p in self.parameters]


def check_request(width: Optional[int], height: Optional[int], steps: int, cfg: float, sampler: str, n: int = 1) -> None:
    """Raises GenerationError naming the first bad value (None sizes mean the model's default)."""
    for name, value in (("width", width), ("height", height)):
        if value is not None and (value <= 0 or value % 8):
            raise GenerationError(f"{name} must be a positive multiple of 8, got {value}")
    if steps < 1:
        raise GenerationError(f"steps must be at least 1, got {steps}")
    if cfg < 0:
        raise GenerationError(f"cfg must not be negative, got {cfg}")
    if n < 1:
        raise GenerationError(f"n must be at least 1, got {n}")
    try:
        check_sampler_name(sampler)
    except ValueError as error:
        raise GenerationError(str(error)) from None


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, so image k of a batch equals a lone run with its seed
    (and results do not depend on the device)."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class Pipeline:
    def __init__(self, components: Components):
        self.components = components

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "Pipeline":
        from ldm.checkpoint import load_model

        return cls(load_model(path, device=device, dtype=dtype))

    # ------------------------------------------------------------------ geometry

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell (8 for KL-f8)."""
        return 2 ** (len(self.components.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.components.unet.config.sample_size * self.vae_scale

    def latent_shape(self, n: int, width: int, height: int) -> tuple[int, int, int, int]:
        channels = self.components.vae.config.latent_channels
        return (n, channels, height // self.vae_scale, width // self.vae_scale)

    # ------------------------------------------------------------------ parts

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        encoder = self.components.text_encoder
        tokens = encoder.tokenize(prompts).to(self.components.device)
        return encoder(tokens).to(self.components.dtype)  # (B, L, D)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (already scaled by scaling_factor) -> pixels (B, 3, H, W) in [-1, 1]."""
        vae = self.components.vae
        return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, generators: Optional[list[torch.Generator]] = None) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents; sampled from the posterior
        with the generators, or its mean without."""
        vae = self.components.vae
        pixels = pixels.to(device=self.components.device, dtype=self.components.dtype)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generators) if generators else posterior.mode()
        return latents * vae.config.scaling_factor

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        uncond_context: Optional[torch.Tensor],
        noise: torch.Tensor,
        steps: int,
        cfg: float,
        sampler: str = DEFAULT_SAMPLER,
        generators: Optional[list[torch.Generator]] = None,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """txt2img in latent space: from unit-variance `noise` (B, C, h, w) to clean latents."""
        device, dtype = self.components.device, self.components.dtype
        chosen = make_sampler(sampler, self.components.scheduler_config)
        chosen.scheduler.set_timesteps(steps, device=device)
        latents = noise.to(device=device, dtype=dtype) * chosen.scheduler.init_noise_sigma
        model = GuidedModel(self.components.unet, context, uncond_context, cfg)
        return denoise(model, chosen, latents, chosen.scheduler.timesteps, generators, callback=callback, progress=progress)

    # ------------------------------------------------------------------ the whole job

    def generate(
        self,
        prompt: str,
        negative: str = "",
        n: int = 1,
        steps: int = 20,
        cfg: float = 7.5,
        sampler: str = DEFAULT_SAMPLER,
        seed: Optional[int] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        batch_size: Optional[int] = None,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
    ) -> GenerationResult:
        """`n` images of `prompt`; image k uses seed `seed + k` (random seed if None)."""
        width = self.default_size if width is None else width
        height = self.default_size if height is None else height
        check_request(width, height, steps, cfg, sampler, n)
        seed = random.randrange(2**32) if seed is None else seed
        batch_size = batch_size or n
        result = GenerationResult(images=[])
        for start in range(0, n, batch_size):
            seeds = [seed + k for k in range(start, min(n, start + batch_size))]
            result.images += self._generate_batch(
                prompt, negative, seeds, steps, cfg, sampler, width, height, callback, progress, result.timings
            )
            result.parameters += [
                GenerationParameters(prompt, negative, steps, sampler, cfg, s, width, height, self.components.name)
                for s in seeds
            ]
        return result

    def _generate_batch(self, prompt, negative, seeds, steps, cfg, sampler, width, height, callback, progress, timings):
        from diffusers.utils.torch_utils import randn_tensor

        clock = Stopwatch(timings)
        generators = make_generators(seeds)
        context = self.encode_text([prompt] * len(seeds))
        uncond = self.encode_text([negative] * len(seeds)) if cfg > 1.0 else None
        clock.lap("text")
        shape = self.latent_shape(len(seeds), width, height)
        noise = randn_tensor(shape, generator=generators, device=self.components.device, dtype=self.components.dtype)
        latents = self.sample(context, uncond, noise, steps, cfg, sampler, generators, callback, progress)
        clock.lap("sampling")
        images = to_pil(self.decode(latents))
        clock.lap("decode")
        return images

