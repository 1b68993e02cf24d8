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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from ldm.builtin_models import UnknownModelError, resolve_model
from ldm.control.denoiser import ActiveControl, with_controls
from ldm.control.library import ControlNets
from ldm.control.prepare import active_controls, crop_controls
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import guidance_embedding_width
from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.inpainting import KnownRegion, inpaint_channels, keep_known_region, latent_mask, masked_pixels
from ldm.diffusion.samplers import DEFAULT_SAMPLER, make_sampler
from ldm.diffusion.sampling import StepInfo, denoise
from ldm.formats.model_folder import ModelError, load_model
from ldm.images import from_pil, mask_from_pil, resized, to_pil, work_size
from ldm.lora.apply import apply_loras
from ldm.lora.refs import model_lora_dir, without_lora_tags
from ldm.masks import composite, crop_box, make_canvas
from ldm.memory import available_bytes, gib, image_bytes
from ldm.models.components import Components
from ldm.models.inference_speed import speed_up
from ldm.png_info import ImageParameters
from ldm.settings import (
    DEFAULT_LIMITS,
    GenerationError,
    Limits,
    Settings,
    as_settings,
    check_input_size,
    check_settings,
    check_size,
)
from ldm.timing import Stopwatch


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: list[ImageParameters] = field(default_factory=list)  # one per image
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, encode, sampling, decode
    notes: list[str] = field(default_factory=list)  # worth telling the user: an input resized, a prompt cut

    @property
    def seeds(self) -> list[int]:
        return [p.seed for p in self.parameters]


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, so image k of a batch equals a lone run with its seed
    (and results do not depend on the device)."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class Pipeline:
    def __init__(self, components: Components, controlnets: Optional[ControlNets] = None, lora_dir: Optional[str] = None):
        self.components = components
        self.controlnets = controlnets or ControlNets()
        self.lora_dir = lora_dir  # where LoRA names resolve when a request gives no lora_dir

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        controlnets: tuple[str | Path, ...] = (),
        compile: bool = False,
    ) -> "Pipeline":
        """A model folder (ours or diffusers SD) or a built-in model's name ("scenes"); a path
        that exists wins. None: the default built-in model. The folder's ControlNets
        (controlnet/<name>/) and the `controlnets` folders can steer it; LoRAs in its loras/
        folder are found by name. `compile`: channels-last and torch.compile for the denoiser
        and the VAE decoder (faster sampling after minutes of compiling on the first image, for
        every size; docs/benchmarks.md)."""
        try:
            path = resolve_model(path)
        except UnknownModelError as error:
            raise ModelError(str(error)) from None
        components = load_model(path, device=device, dtype=dtype)
        if compile:
            speed_up(components, channels_last=True, compile=True)
        return cls(components, ControlNets.for_model(path, controlnets), model_lora_dir(path))

    def warm_up(self) -> None:
        """Three-step images at the model's size with its own sampling defaults, one alone and
        two together: a compiled model compiles here, before a request waits for it. Both,
        because the compiler fixes a size of 1 (one image's decode) and generalises others."""
        for n in (1, 2):
            self.generate("", steps=3, n=n, seed=0, progress=False)

    # ------------------------------------------------------------------ geometry

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell (8 for KL-f8)."""
        return 2 ** (len(self.components.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.components.denoiser.config.sample_size * self.vae_scale

    @property
    def size_multiple(self) -> int:
        """Pixels per denoiser input cell: the VAE's scale times a DiT's patch size."""
        return self.vae_scale * backbone_of(self.components.denoiser).patch_size

    def check_model_size(self, width: int, height: int) -> None:
        """A DiT cuts the latents into patches: sizes must tile into whole patches."""
        multiple = self.size_multiple
        if width % multiple or height % multiple:
            raise GenerationError(f"this model needs width and height in multiples of {multiple} pixels, got {width}x{height}")

    def latent_shape(self, n: int, width: int, height: int) -> tuple[int, int, int, int]:
        channels = self.components.vae.config.latent_channels
        return (n, channels, height // self.vae_scale, width // self.vae_scale)

    # ------------------------------------------------------------------ parts

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Conditioning:
        """The text side's conditioning for `prompts` (tokens (B, L, D))."""
        encoder = self.components.text_encoder
        tokens = encoder.tokenize(prompts).to(self.components.device)
        return Conditioning(encoder(tokens).to(self.components.dtype))

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
        cond: Conditioning,
        uncond: Optional[Conditioning],
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
        controls: tuple[ActiveControl, ...] = (),
    ) -> torch.Tensor:
        """Denoises in latent space and returns clean latents (B, C, h, w).

        txt2img: from unit-variance `noise`. img2img: with `init_latents` and strength < 1,
        from `init_latents` noised (with `noise`) to the timestep that strength selects,
        running only the last int(steps * strength) steps; when that is none, `init_latents`
        come back as they are. strength 1 starts from pure noise, whatever `init_latents`.
        Inpainting adds `known_region` (4-channel U-Nets) or the conditioning's concatenated
        channels (9-channel: cond.concat; the unconditional pass shares them).
        `controls`: ControlNets whose residuals steer every denoiser call in their window.
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
        denoiser = with_controls(self.components.denoiser, controls, len(timesteps))
        model = GuidedModel(denoiser, cond, uncond, cfg)
        return denoise(model, chosen, latents, timesteps, generators, after_step, callback, progress)

    # ------------------------------------------------------------------ the whole job

    def request(self, prompt: str | Settings, options: dict) -> Settings:
        """The request's settings; the sampler, steps and cfg it leaves out come from the
        model's `sampling` config, else the generation defaults (the one place they apply);
        LoRA names resolve in the model's own loras/ folder unless the request names a folder."""
        config = self.components.config
        model_defaults = dataclasses.asdict(config.sampling) if config is not None else {}
        settings = as_settings(prompt, options).with_defaults(model_defaults)
        if settings.lora_dir is None and self.lora_dir is not None:
            settings = settings.replace(lora_dir=self.lora_dir)
        return settings

    def generate(
        self,
        prompt: str | Settings,
        *,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        **options,
    ) -> GenerationResult:
        """`n` images of `prompt` (a string with Settings' fields as keywords, or a Settings);
        image k uses seed `seed + k` (a random seed if None)."""
        settings = self.request(prompt, options)
        check_settings(settings, "txt2img", limits)
        width, height = settings.width or self.default_size, settings.height or self.default_size
        check_size(width, height, limits)
        result = GenerationResult(images=[])
        run_batch = lambda batch: self._run_batch(batch, width, height, result, callback=callback, progress=progress)  # noqa: E731
        return self._in_batches(result, settings, "txt2img", (width, height), run_batch)

    def img2img(
        self,
        prompt: str | Settings,
        image: Image.Image,
        strength: Optional[float] = None,
        *,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        **options,
    ) -> GenerationResult:
        """`n` images of `prompt` that start from `image`, resized to `width` x `height` (by
        default its own size rounded to multiples of 8). The image is encoded, noised to the
        timestep `strength` selects (default 0.75) and denoised from there: the last
        int(steps * strength) steps run. strength 1 ignores the image (the same as `generate`
        with the same seed); a strength that leaves no step (0) returns the image's VAE round trip."""
        settings = self.request(prompt, {**options, **({} if strength is None else {"strength": strength})})
        check_settings(settings, "img2img", limits)
        check_input_size(settings, "img2img", image.size, limits)
        size = work_size(image.size, settings.width, settings.height)
        check_size(*size, limits)
        result = GenerationResult(images=[])
        if size != image.size:
            result.notes.append("init image {}x{} resized to {}x{}".format(*image.size, *size))
        pixels = from_pil([resized(image.convert("RGB"), size)])  # (1, 3, H, W)
        strength = settings.strength_for("img2img")
        run_batch = lambda batch: self._run_batch(batch, *size, result, pixels, None, strength, callback, progress)  # noqa: E731
        return self._in_batches(result, settings, "img2img", size, run_batch)

    def inpaint(
        self,
        prompt: str | Settings,
        image: Image.Image,
        mask: Optional[Image.Image] = None,
        strength: Optional[float] = None,
        *,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        **options,
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
        settings = self.request(prompt, {**options, **({} if strength is None else {"strength": strength})})
        check_settings(settings, "inpaint", limits)
        check_input_size(settings, "inpaint", image.size, limits)
        if mask is None and settings.pad is None:
            raise GenerationError("inpainting needs a mask (or an outpainting pad)")
        result = GenerationResult(images=[])
        if mask is not None and mask.size != image.size:
            result.notes.append("mask {}x{} resized to the image's {}x{}".format(*mask.size, *image.size))
        canvas = make_canvas(image, mask, settings.mask_blur, settings.pad)
        if canvas.is_empty:
            result.notes.append("mask is all black: nothing to repaint; the input is returned unchanged")
            return self._in_batches(result, settings, "inpaint", canvas.image.size, lambda batch: [canvas.image.copy() for _ in batch])
        if canvas.is_full:
            result.notes.append("mask is all white: the whole image is repainted")
        width, height, crop_to_mask = settings.width, settings.height, settings.crop_to_mask

        # The region the model sees, at the size it works at.
        if crop_to_mask is None:
            box, size = (0, 0, *canvas.image.size), work_size(canvas.image.size, width, height)
        else:
            size = (width or self.default_size, height or self.default_size)
            box = crop_box(canvas.repaint, crop_to_mask, size[0] / size[1])
        pixels = from_pil([resized(canvas.image.crop(box), size)])  # (1, 3, H, W)
        if settings.controls and (crop_to_mask is not None or settings.pad is not None):
            settings = settings.replace(controls=crop_controls(settings.controls, canvas.image.size, box))
        region_mask = mask_from_pil(canvas.repaint.crop(box).resize(size, Image.BILINEAR))  # (1, 1, H, W)

        # A 4-channel U-Net with nothing to keep is plain img2img (txt2img at strength 1).
        if canvas.is_full and not self.is_inpainting_model:
            region_mask = None

        check_size(*size, limits)
        strength = settings.strength_for("inpaint")

        def run_batch(batch: list[Settings]) -> list[Image.Image]:
            inpainted = self._run_batch(batch, *size, result, pixels, region_mask, strength, callback, progress)
            return [composite(each, canvas.image, canvas.feather, box) for each in inpainted]

        return self._in_batches(result, settings, "inpaint", canvas.image.size, run_batch)

    # ------------------------------------------------------------------ batches

    @property
    def is_inpainting_model(self) -> bool:
        """A 9-channel U-Net: latents + mask + masked-image latents."""
        return self.components.denoiser.config.in_channels > self.components.vae.config.latent_channels

    def _in_batches(self, result, settings: Settings, mode: str, size: tuple[int, int], run_batch) -> GenerationResult:
        """Fills `result` with `n` images made by run_batch(per-image settings), as many at a
        time as fit in memory (or `batch_size`); image k uses seed `seed + k`."""
        settings = settings.with_seed()
        if settings.controls:  # each unit names its ControlNet, loaded and checked: an error now, before any work
            settings = settings.replace(controls=self.controlnets.resolve(settings.controls))
            self.controlnets.load_for(settings.controls, self.components)
        batch_size = settings.batch_size or self.fitting_batch_size(settings, size)
        each = [settings.replace(seed=settings.seed + k, n=1) for k in range(settings.n)]
        try:
            loras = apply_loras(self.components, settings.lora_files())  # this request's only
        except (ValueError, ModelError) as error:  # a file not found, not safetensors, not fitting
            raise GenerationError(str(error)) from None
        try:
            for start in range(0, settings.n, batch_size):
                batch = each[start : start + batch_size]
                result.images += run_batch(batch)
                result.parameters += [ImageParameters(s, mode, self.components.name, *size) for s in batch]
        finally:
            loras.unload()  # the next request draws with the base model exactly, even after an error
        return result

    def fitting_batch_size(self, settings: Settings, size: tuple[int, int]) -> int:
        """How many images of `size` one batch can hold in the memory there is; GenerationError
        when not even one fits."""
        need = image_bytes(self.components, *size, guided=self.two_passes(settings.cfg))
        have = available_bytes(self.components.device)
        if need > have:
            raise GenerationError(
                "one {}x{} image needs about {} on {}, more than the {} available: choose a smaller size".format(
                    *size, gib(need), self.components.device, gib(have)
                )
            )
        return max(1, min(settings.n, have // need))

    def _prompt_contexts(self, batch: list[Settings], notes: list[str]):
        first = batch[0]
        prompts = [without_lora_tags(s.prompt) for s in batch]  # <lora:...> tags name LoRAs, not words
        for what, text in (("prompt", prompts[0]), ("negative prompt", first.negative)):
            note = self.truncation_note(what, text)
            if note and note not in notes:
                notes.append(note)
        distilled = "the negative prompt is not used: this model is guidance-distilled (--cfg is its input)"
        if first.negative and self.guidance_distilled and distilled not in notes:
            notes.append(distilled)
        context = self.encode_text(prompts)
        uncond = self.encode_text([s.negative for s in batch]) if self.two_passes(first.cfg) else None
        return context, uncond

    @property
    def guidance_distilled(self) -> bool:
        return guidance_embedding_width(self.components.denoiser) is not None

    def two_passes(self, cfg: float) -> bool:
        """Whether guidance makes an unconditional pass beside the conditional one."""
        return cfg > 1.0 and not self.guidance_distilled

    def truncation_note(self, what: str, text: str) -> Optional[str]:
        """Says so when the text encoder will not read all of `text` (CLIP reads 75 tokens + 2 marks)."""
        encoder = self.components.text_encoder
        count, room = encoder.count_tokens(text), encoder.max_tokens
        if count <= room:
            return None
        return f"{what} is {count} tokens; the text encoder reads the first {room}, the rest is ignored"

    def _noise(self, generators: list[torch.Generator], width: int, height: int) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        shape = self.latent_shape(len(generators), width, height)
        return randn_tensor(shape, generator=generators, device=self.components.device, dtype=self.components.dtype)

    def _run_batch(self, batch, width, height, result, pixels=None, mask=None, strength=1.0, callback=None, progress=True):
        """One batch of decoded images, one per settings in `batch` (same prompt, own seeds):
        txt2img (no `pixels`), img2img from `pixels` (1, 3, H, W) or inpainting them where
        `mask` (1, 1, H, W) is 1 (not yet composited)."""
        if mask is None and self.is_inpainting_model:
            raise GenerationError("this model is an inpainting model (its denoiser takes a mask): use inpaint")
        self.check_model_size(width, height)
        clock = Stopwatch(result.timings)
        device, dtype = self.components.device, self.components.dtype
        settings, seeds = batch[0], [s.seed for s in batch]
        generators = make_generators(seeds)
        context, uncond = self._prompt_contexts(batch, result.notes)
        clock.lap("text")
        # Random draws in diffusers' order (input posterior, noise, masked-input posterior) so
        # that a seed gives their image, ancestral samplers' noise included.
        init_latents = known_region = extra_channels = None
        if pixels is not None:
            pixels = pixels.expand(len(seeds), -1, -1, -1).to(device=device, dtype=dtype)  # (B, 3, H, W)
            if strength < 1.0 or (mask is not None and not self.is_inpainting_model):
                init_latents = self.encode_images(pixels, generators)  # (B, C, h, w)
        noise = self._noise(generators, width, height)  # (B, C, h, w)
        controls = active_controls(self.controlnets, settings.controls or (), (width, height), device, dtype, result.notes)
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
        cond = context.replace(concat=extra_channels)
        latents = self.sample(
            cond, uncond, noise, settings.steps, settings.cfg, settings.sampler, generators, callback, progress,
            init_latents=init_latents, strength=strength, known_region=known_region, controls=tuple(controls),
        )  # fmt: skip
        clock.lap("sampling")
        decoded = self.decode(latents)  # (B, 3, H, W)
        if not torch.isfinite(decoded).all():
            raise GenerationError(
                f"the images came out as NaN/infinite values (cfg {settings.cfg:g}, {dtype}): nothing was saved; "
                "try a lower --cfg, or --dtype fp32"
            )
        images = to_pil(decoded)
        clock.lap("decode")
        return images
