"""Generation on loaded components: the Python API for txt2img, img2img and inpainting.

    from PIL import Image
    from ldm.pipeline import Pipeline
    pipe = Pipeline.load("runs/scenes/model")              # or an SD folder in diffusers format
    result = pipe.generate("a lake at dawn", cfg=7.5, steps=20, seed=7, n=2)
    result.images[0].save("lake.png")
    photo = Image.open("photo.png")
    pipe.img2img("a lake at dusk", photo, strength=0.6, seed=7).images[0].save("dusk.png")
    pipe.inpaint("a boat", photo, Image.open("mask.png"), seed=7).images[0].save("boat.png")

All three are modes of one denoising loop (ldm.diffusion.sampling.denoise); they differ in
the starting latents, the first timestep (strength) and the inpainting constraint.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.inpainting import KnownRegion, inpaint_channels, keep_known_region, latent_mask, masked_pixels
from ldm.diffusion.samplers import DEFAULT_SAMPLER, check_sampler_name, make_sampler
from ldm.diffusion.sampling import StepInfo, denoise
from ldm.errors import LdmError
from ldm.images import from_pil, mask_from_pil, resized, to_pil, work_size
from ldm.masks import Pad, composite, crop_box, make_canvas
from ldm.models.components import Components
from ldm.png_info import GenerationParameters, edit_fields
from ldm.timing import Stopwatch


class GenerationError(LdmError, ValueError):
    """A request that cannot be generated; the message says which value is wrong."""


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: list[GenerationParameters] = field(default_factory=list)  # one per image
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, encode, sampling, decode
    notes: list[str] = field(default_factory=list)  # worth telling the user: an input resized, a mask all black

    @property
    def seeds(self) -> list[int]:
        return [p.seed for p in self.parameters]


def check_request(
    width: Optional[int], height: Optional[int], steps: int, cfg: float, sampler: str, n: int = 1, strength: float = 1.0
) -> None:
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
    if not 0.0 <= strength <= 1.0:
        raise GenerationError(f"strength must be between 0 and 1, got {strength:g}")
    try:
        check_sampler_name(sampler)
    except ValueError as error:
        raise GenerationError(str(error)) from None


def check_inpaint_request(mask_blur: float, crop_to_mask: Optional[int], pad: Optional[Pad]) -> None:
    if mask_blur < 0:
        raise GenerationError(f"mask blur must not be negative, got {mask_blur:g}")
    if crop_to_mask is not None and crop_to_mask < 0:
        raise GenerationError(f"crop-to-mask padding must not be negative, got {crop_to_mask}")
    if pad is not None and len(pad) != 4:
        raise GenerationError(f"pad needs 4 values (left, top, right, bottom), got {len(pad)}")
    if pad is not None and min(pad) < 0:
        raise GenerationError(f"pad must not be negative, got {','.join(map(str, pad))}")


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, so image k of a batch equals a lone run with its seed
    (and results do not depend on the device)."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class Pipeline:
    def __init__(self, components: Components):
        self.components = components

    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "Pipeline":
        """A model folder (ours or diffusers SD); None: the demo model shipped in the package."""
        from ldm.model_folder import ModelError, load_model
        from ldm.default_model import default_model_path

        if path is None:
            path = default_model_path()
            if path is None:
                raise ModelError("this install carries no built-in model: give a model folder")
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
        # Contiguous NCHW: pixels from PIL are channels-last, the VAE keeps that memory format,
        # and the U-Net's kernels would then round differently from a contiguous run.
        return (latents * vae.config.scaling_factor).contiguous()  # (B, C, H/8, W/8)

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
        *,
        init_latents: Optional[torch.Tensor] = None,
        strength: float = 1.0,
        known_region: Optional[KnownRegion] = None,
        extra_channels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Denoises in latent space and returns clean latents (B, C, h, w).

        txt2img: from unit-variance `noise`. img2img: with `init_latents` and strength < 1,
        from `init_latents` noised (with `noise`) to the timestep that strength selects,
        running only the last int(steps * strength) steps; when that is none, `init_latents`
        come back as they are. strength 1 starts from pure noise, whatever `init_latents`.
        Inpainting adds `known_region` (4-channel U-Nets) or `extra_channels` (9-channel).
        """
        if init_latents is None and strength < 1.0:
            raise GenerationError("strength below 1 needs init_latents to start from")
        device, dtype = self.components.device, self.components.dtype
        chosen = make_sampler(sampler, self.components.scheduler_config)
        timesteps = chosen.set_timesteps(steps, device=device, strength=strength)
        noise = noise.to(device=device, dtype=dtype)
        if init_latents is None or strength >= 1.0:
            latents = noise * chosen.scheduler.init_noise_sigma
        elif len(timesteps) == 0:
            return init_latents
        else:
            latents = chosen.scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(len(noise)))
        after_step = None
        if known_region is not None:
            after_step = keep_known_region(known_region, noise, chosen.scheduler, timesteps)
        model = GuidedModel(self.components.unet, context, uncond_context, cfg)
        return denoise(model, chosen, latents, timesteps, generators, extra_channels, after_step, callback, progress)

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
        settings = GenerationParameters(prompt, negative, steps, sampler, cfg, 0, width, height, self.components.name)
        result = GenerationResult(images=[])
        run_batch = lambda seeds: self._run_batch(settings, seeds, result.timings, callback=callback, progress=progress)  # noqa: E731
        return self._in_batches(result, settings, n, seed, batch_size, run_batch)

    def img2img(
        self,
        prompt: str,
        image: Image.Image,
        strength: float = 0.75,
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
        """`n` images of `prompt` that start from `image`, resized to `width` x `height` (by
        default its own size rounded to multiples of 8). The image is encoded, noised to the
        timestep `strength` selects and denoised from there: the last int(steps * strength)
        steps run. strength 1 ignores the image (the same as `generate` with the same seed);
        a strength that leaves no step (0) returns the image's VAE round trip."""
        check_request(width, height, steps, cfg, sampler, n, strength)
        size = work_size(image.size, width, height)
        result = GenerationResult(images=[])
        if size != image.size:
            result.notes.append("init image {}x{} resized to {}x{}".format(*image.size, *size))
        pixels = from_pil([resized(image.convert("RGB"), size)])  # (1, 3, H, W)
        extra = edit_fields(strength)
        settings = GenerationParameters(prompt, negative, steps, sampler, cfg, 0, *size, self.components.name, extra)
        run_batch = lambda seeds: self._run_batch(settings, seeds, result.timings, pixels, None, strength, callback, progress)  # noqa: E731
        return self._in_batches(result, settings, n, seed, batch_size, run_batch)

    def inpaint(
        self,
        prompt: str,
        image: Image.Image,
        mask: Optional[Image.Image] = None,
        strength: float = 1.0,
        mask_blur: float = 4,
        crop_to_mask: Optional[int] = None,
        pad: Optional[Pad] = None,
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
        """Repaints the white part of `mask` (any mode; resized to the image) in `image`, and
        composites the result over the input through the mask feathered by `mask_blur`
        pixels: pixels beyond the feather are the input's exactly; the output has the
        input's size (grown by `pad`).

        The region is inpainted at `width` x `height` (by default the image's size rounded to
        multiples of 8). `crop_to_mask=P`: only a crop around the mask, P pixels wider on
        each side, is inpainted at `width` x `height` (default: the model's size) and pasted
        back. `pad=(left, top, right, bottom)`: outpainting, the canvas grows and its new
        border is repainted (with `mask`, if given, inside). `strength` < 1 starts from the
        noised input, as img2img. An all-black mask returns the input unchanged; an all-white
        one (with a 4-channel U-Net) is img2img (txt2img at strength 1) with the same seed.
        """
        check_request(width, height, steps, cfg, sampler, n, strength)
        check_inpaint_request(mask_blur, crop_to_mask, pad)
        if mask is None and pad is None:
            raise GenerationError("inpainting needs a mask (or an outpainting pad)")
        result = GenerationResult(images=[])
        if mask is not None and mask.size != image.size:
            result.notes.append("mask {}x{} resized to the image's {}x{}".format(*mask.size, *image.size))
        canvas = make_canvas(image, mask, mask_blur, pad)
        extra = edit_fields(strength, mask_blur, crop_to_mask, pad)
        settings = GenerationParameters(prompt, negative, steps, sampler, cfg, 0, *canvas.image.size, self.components.name, extra)
        if canvas.is_empty:
            result.notes.append("mask is all black: nothing to repaint; the input is returned unchanged")
            return self._in_batches(result, settings, n, seed, batch_size, lambda seeds: [canvas.image.copy() for _ in seeds])
        if canvas.is_full:
            result.notes.append("mask is all white: the whole image is repainted")

        # The region the model sees, at the size it works at.
        if crop_to_mask is None:
            box, size = (0, 0, *canvas.image.size), work_size(canvas.image.size, width, height)
        else:
            size = (width or self.default_size, height or self.default_size)
            box = crop_box(canvas.repaint, crop_to_mask, size[0] / size[1])
        pixels = from_pil([resized(canvas.image.crop(box), size)])  # (1, 3, H, W)
        region_mask = mask_from_pil(canvas.repaint.crop(box).resize(size, Image.BILINEAR))  # (1, 1, H, W)

        # A 4-channel U-Net with nothing to keep is plain img2img (txt2img at strength 1).
        if canvas.is_full and not self.is_inpainting_model:
            region_mask = None

        def run_batch(seeds: list[int]) -> list[Image.Image]:
            inpainted = self._run_batch(settings, seeds, result.timings, pixels, region_mask, strength, callback, progress)
            return [composite(each, canvas.image, canvas.feather, box) for each in inpainted]

        return self._in_batches(result, settings, n, seed, batch_size, run_batch)

    # ------------------------------------------------------------------ batches

    @property
    def is_inpainting_model(self) -> bool:
        """A 9-channel U-Net: latents + mask + masked-image latents."""
        return self.components.unet.config.in_channels > self.components.vae.config.latent_channels

    def _in_batches(self, result, settings, n, seed, batch_size, run_batch) -> GenerationResult:
        """Fills `result` with `n` images made `batch_size` at a time by run_batch(seeds);
        image k uses seed `seed + k` (a random seed if None)."""
        seed = random.randrange(2**32) if seed is None else seed
        batch_size = batch_size or n
        for start in range(0, n, batch_size):
            seeds = [seed + k for k in range(start, min(n, start + batch_size))]
            result.images += run_batch(seeds)
            result.parameters += [dataclasses.replace(settings, seed=s) for s in seeds]
        return result

    def _prompt_contexts(self, settings: GenerationParameters, count: int):
        context = self.encode_text([settings.prompt] * count)
        uncond = self.encode_text([settings.negative_prompt] * count) if settings.cfg_scale > 1.0 else None
        return context, uncond

    def _noise(self, generators: list[torch.Generator], width: int, height: int) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        shape = self.latent_shape(len(generators), width, height)
        return randn_tensor(shape, generator=generators, device=self.components.device, dtype=self.components.dtype)

    def _run_batch(self, settings, seeds, timings, pixels=None, mask=None, strength=1.0, callback=None, progress=True):
        """One batch of decoded images: txt2img (no `pixels`), img2img from `pixels` (1, 3, H, W)
        or inpainting them where `mask` (1, 1, H, W) is 1 (not yet composited)."""
        if mask is None and self.is_inpainting_model:
            raise GenerationError("this model is an inpainting model (its U-Net takes a mask): use inpaint")
        clock = Stopwatch(timings)
        device, dtype = self.components.device, self.components.dtype
        generators = make_generators(seeds)
        context, uncond = self._prompt_contexts(settings, len(seeds))
        clock.lap("text")
        width, height = (settings.width, settings.height) if pixels is None else (pixels.shape[-1], pixels.shape[-2])
        # Random draws in diffusers' order (input posterior, noise, masked-input posterior) so
        # that a seed gives their image, ancestral samplers' noise included.
        init_latents = known_region = extra_channels = None
        if pixels is not None:
            pixels = pixels.expand(len(seeds), -1, -1, -1).to(device=device, dtype=dtype)  # (B, 3, H, W)
            if strength < 1.0 or (mask is not None and not self.is_inpainting_model):
                init_latents = self.encode_images(pixels, generators)  # (B, C, h, w)
        noise = self._noise(generators, width, height)  # (B, C, h, w)
        if mask is not None:
            mask = mask.to(device=device, dtype=dtype)
            small_mask = latent_mask(mask, noise.shape[-2:])  # (1, 1, h, w)
            if self.is_inpainting_model:
                masked_latents = self.encode_images(masked_pixels(pixels, mask), generators)  # (B, C, h, w)
                extra_channels = inpaint_channels(small_mask, masked_latents)  # (B, 1 + C, h, w)
            else:
                # diffusers encodes the masked input for 4-channel U-Nets too, and discards it:
                # draw (and discard) the same numbers, without the VAE pass.
                self._noise(generators, width, height)
                known_region = KnownRegion(init_latents, small_mask)
        if pixels is not None:
            clock.lap("encode")
        latents = self.sample(
            context, uncond, noise, settings.steps, settings.cfg_scale, settings.sampler, generators, callback, progress,
            init_latents=init_latents, strength=strength, known_region=known_region, extra_channels=extra_channels,
        )  # fmt: skip
        clock.lap("sampling")
        images = to_pil(self.decode(latents))
        clock.lap("decode")
        return images
