"""The pipeline: loaded components, the parts every generation mode shares, and `sample`.

The modes themselves (txt2img, img2img, inpainting) are tasks (ldm.pipeline.txt2img,
.img2img, .inpaint) that plan a request and start its batches; `run` does the rest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from ldm.builtin_models import UnknownModelError, resolve_model
from ldm.control.denoiser import with_controls
from ldm.control.library import ControlNets
from ldm.control.prepare import active_controls
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.conditioning_schedule import ConditioningSchedule, padded, token_count
from ldm.diffusion.denoiser import guidance_embedding_width
from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.inpainting import keep_known_region
from ldm.diffusion.samplers import UnknownSampler, check_sampler_fits, default_sampler, make_sampler
from ldm.diffusion.sampling import StepInfo, denoise
from ldm.formats.model_folder import ModelError, load_model
from ldm.images import to_pil
from ldm.lora.embeddings import model_embeddings_dir
from ldm.models.autoencoder import from_vae_latents, to_vae_latents
from ldm.lora.refs import model_lora_dir, without_lora_tags
from ldm.models.components import Components
from ldm.models.inference_speed import speed_up
from ldm.pipeline.batching import in_batches
from ldm.pipeline.img2img import Img2Img
from ldm.pipeline.inpaint import Inpaint
from ldm.pipeline.request import SampleRequest, make_generators
from ldm.pipeline.result import GenerationResult
from ldm.pipeline.modes import task_for
from ldm.pipeline.refiner import check_base_reaches_switch, refiner_for, sample_with_refiner
from ldm.pipeline.step_time import check_step_time
from ldm.pipeline.task import BatchContext, Plan, Start, Task, micro_conditioned, refuse_micro_conditioning
from ldm.pipeline.tiling import tile_pixels, tiled
from ldm.prompts.schedule import prompt_schedule
from ldm.prompts.syntax import DEFAULT_PROMPT_SYNTAX, parse_attention
from ldm.pipeline.upscale_chain import upscale_result
from ldm.pipeline.upscale_tiles import upscale_picture
from ldm.settings import DEFAULT_LIMITS, GenerationError, Limits, Settings, as_settings, check_settings
from ldm.timing import Stopwatch


class Pipeline:
    def __init__(
        self,
        components: Components,
        controlnets: Optional[ControlNets] = None,
        lora_dir: Optional[str] = None,
        embeddings_dir: Optional[str] = None,
    ):
        self.components = components
        self.controlnets = controlnets or ControlNets()
        self.lora_dir = lora_dir  # where LoRA names resolve when a request gives no lora_dir
        self.embeddings_dir = embeddings_dir  # textual-inversion files whose names prompts use

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        controlnets: tuple[str | Path, ...] = (),
        compile: bool = False,
        embeddings_dir: str | Path | None = None,
    ) -> "Pipeline":
        """A model folder (ours or diffusers SD) or a built-in model's name ("scenes"); a path
        that exists wins. None: the default built-in model. The folder's ControlNets
        (controlnet/<name>/) and the `controlnets` folders can steer it; LoRAs in its loras/
        folder are found by name, the embeddings in `embeddings_dir` (default: its embeddings/
        folder) by the words prompts use. `compile`: channels-last and torch.compile for the denoiser
        and the VAE decoder (faster sampling after minutes of compiling on the first image, for
        every size; docs/benchmarks.md)."""
        try:
            path = resolve_model(path)
        except UnknownModelError as error:
            raise ModelError(str(error)) from None
        if embeddings_dir is not None and not Path(embeddings_dir).is_dir():
            raise ModelError(f"embeddings folder not found: {embeddings_dir}")
        components = load_model(path, device=device, dtype=dtype)
        if compile:
            speed_up(components, channels_last=True, compile=True)
        embeddings = str(embeddings_dir) if embeddings_dir is not None else model_embeddings_dir(path)
        return cls(components, ControlNets.for_model(path, controlnets), model_lora_dir(path), embeddings)

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

    @property
    def vae_tile(self) -> int:
        """The side in pixels of the tiles a tiled VAE pass works in (ldm.pipeline.tiling)."""
        return tile_pixels(self.components.vae.config)

    def latent_shape(self, n: int, width: int, height: int) -> tuple[int, int, int, int]:
        channels = self.components.vae.config.latent_channels
        return (n, channels, height // self.vae_scale, width // self.vae_scale)

    # ------------------------------------------------------------------ parts

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Conditioning:
        """The text side's conditioning for `prompts` (tokens (B, L, D), pooled (B, P)), in the denoiser's dtype."""
        return self.components.conditioner(prompts, self.components.device).to(dtype=self.components.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tile: Optional[int] = None) -> torch.Tensor:
        """Latents (already scaled by scaling_factor, shifted by a shift_factor) -> pixels (B, 3, H, W) in [-1, 1];
        `tile`: in overlapping tiles of that many pixels a side (`vae_tile`: the usual)."""
        vae = self.components.vae
        if self.upcasts_vae and vae.dtype == torch.float16:
            return self._decode_upcast(latents, tile)
        with tiled(vae, tile):
            return vae.decode(to_vae_latents(vae, latents), return_dict=False)[0]

    @property
    def upcasts_vae(self) -> bool:
        """Whether fp16 latents decode in fp32: SDXL's VAE overflows in fp16 unless its config
        says otherwise (force_upcast), as diffusers' SDXL pipelines do; SD 1/2 pipelines never upcast."""
        takes_time_ids = getattr(backbone_of(self.components.denoiser), "takes_time_ids", False)
        return takes_time_ids and getattr(self.components.vae.config, "force_upcast", False)

    def _decode_upcast(self, latents: torch.Tensor, tile: Optional[int]) -> torch.Tensor:
        vae = self.components.vae
        vae.to(torch.float32)
        try:
            with tiled(vae, tile):
                pixels = vae.decode(to_vae_latents(vae, latents.float()), return_dict=False)[0]
        finally:
            vae.to(torch.float16)
        return pixels.to(torch.float16)

    @torch.no_grad()
    def encode_images(
        self, pixels: torch.Tensor, generators: Optional[list[torch.Generator]] = None, tile: Optional[int] = None
    ) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents; sampled from the posterior
        with the generators, or its mean without; `tile`: as `decode`'s."""
        vae = self.components.vae
        pixels = pixels.to(device=self.components.device, dtype=self.components.dtype)
        with tiled(vae, tile):
            posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generators) if generators else posterior.mode()
        # Contiguous NCHW: pixels from PIL are channels-last, the VAE keeps that memory format,
        # and the U-Net's kernels would then round differently from a contiguous run.
        return from_vae_latents(vae, latents).contiguous()  # (B, C, H/8, W/8)

    @torch.no_grad()
    def sample(self, request: SampleRequest) -> torch.Tensor:
        """Denoises in latent space and returns clean latents (B, C, h, w): the one sampling
        run every mode makes (ldm.pipeline.request.SampleRequest says what each one passes)."""
        if request.init_latents is None and request.strength < 1.0:
            raise GenerationError("strength below 1 needs init_latents to start from")
        device, dtype = self.components.device, self.components.dtype
        chosen = make_sampler(request.sampler, self.components.scheduler_config)
        timesteps = chosen.set_timesteps(request.steps, device=device, strength=request.strength)
        if request.switch_end is not None:
            timesteps = chosen.before_switch(timesteps, request.switch_end)
        noise = request.noise.to(device=device, dtype=dtype)
        init_latents = request.init_latents
        if request.switch_start is not None:  # a refiner goes on from the base's latents as they are
            timesteps, latents = chosen.after_switch(request.steps, request.switch_start, device), init_latents
        elif init_latents is None or request.strength >= 1.0:
            latents = chosen.start(noise)
        elif len(timesteps) == 0:
            return init_latents
        else:
            latents = chosen.renoise(init_latents, noise, timesteps[:1].repeat(len(noise)))
        after_step = None
        if request.known_region is not None:
            after_step = keep_known_region(request.known_region, noise, chosen, timesteps)
        denoiser = with_controls(self.components.denoiser, request.controls, len(timesteps))
        model = GuidedModel(denoiser, request.cond, request.uncond, request.cfg)
        return denoise(model, chosen, latents, timesteps, request.generators, after_step, request.callback, request.progress)

    # ------------------------------------------------------------------ the whole job

    def request(self, prompt: str | Settings, options: dict) -> Settings:
        """The request's settings; the sampler, steps and cfg it leaves out come from the
        model's `sampling` config, else the generation defaults (the one place they apply);
        LoRA names resolve in the model's own loras/ folder unless the request names a folder."""
        config = self.components.config
        model_defaults = dataclasses.asdict(config.sampling) if config is not None else {}
        if model_defaults.get("sampler") is None:  # a flow model's own default: flow-euler
            model_defaults["sampler"] = default_sampler(self.components.scheduler_config)
        settings = as_settings(prompt, options).with_defaults(model_defaults)
        try:
            check_sampler_fits(settings.sampler, self.components.scheduler_config)
        except UnknownSampler as error:
            raise GenerationError(str(error)) from None
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
        image k uses seed `seed + k` (a random seed if None). With `hires_scale` (or
        `hires_resize`), AUTOMATIC1111's hires fix: drawn at `width` x `height`, upscaled and
        repainted image-to-image at the larger size (ldm.pipeline.hires)."""
        settings = self.request(prompt, options)
        return self.run(task_for("txt2img", settings=settings), settings, callback=callback, progress=progress, limits=limits)

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
        int(steps * strength) steps run (a flow model's sampler runs steps - int(steps - steps *
        strength), as diffusers' SD3 pipelines: Sampler.kept_steps). strength 1 ignores the image (the same as `generate`
        with the same seed); a strength that leaves no step (0) returns the image's VAE round trip."""
        settings = self.request(prompt, with_strength(options, strength))
        return self.run(Img2Img(image), settings, callback=callback, progress=progress, limits=limits)

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
        settings = self.request(prompt, with_strength(options, strength))
        return self.run(Inpaint(image, mask), settings, callback=callback, progress=progress, limits=limits)

    def upscale(
        self,
        prompt: str | Settings,
        image: Image.Image,
        *,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        **options,
    ) -> GenerationResult:
        """`n` upscales of `image` by this upscaler (a model with an `upscaler` section, or a
        diffusers x4-upscaler folder): its VAE's scale times the size (4 for Stable Diffusion's),
        steered by `prompt`. `noise_level` (default: the model's) noises the picture first;
        `tile` (low-resolution pixels a side) upscales in overlapping tiles, as happens on its
        own when the whole does not fit in memory (ldm.pipeline.upscale_tiles)."""
        return upscale_picture(self, self.request(prompt, options), image, limits, callback, progress)

    def upscale_result(self, result: GenerationResult, *, limits: Limits = DEFAULT_LIMITS, progress: bool = True, **options) -> GenerationResult:
        """Each image of another model's `result` (generate, img2img, inpaint) upscaled by this
        upscaler with the image's prompt and seed; the parameters record both (ldm.pipeline.upscale_chain)."""
        return upscale_result(self, result, limits=limits, progress=progress, **options)

    def run(
        self,
        task: Task,
        settings: Settings,
        *,
        callback: Optional[Callable[[StepInfo], None]] = None,
        progress: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> GenerationResult:
        """`task`'s images for `settings` (the model's defaults already applied: `request`)."""
        check_settings(settings, task.mode, limits)
        refuse_micro_conditioning(self, settings)
        result = GenerationResult(images=[])
        plan = task.plan(self, settings, limits, result.notes)
        if settings.refiner is not None:
            refiner_for(self, settings)  # loaded (or refused) before any image is drawn
            check_base_reaches_switch(self, plan.settings, plan)
        if plan.unchanged is None and plan.strength > 0:  # a step will run
            check_step_time(self, plan.size, self.two_passes(plan.settings.cfg), limits)
        if plan.unchanged is not None:
            return in_batches(self, result, plan.settings, task.mode, plan.output_size, lambda batch: [plan.unchanged.copy() for _ in batch])

        def run_batch(batch: list[Settings]) -> list[Image.Image]:
            with tiled(self.components.vae, self.vae_tile if batch[0].vae_tiling == "on" else None):  # encodes and decodes
                return plan.finish(self._draw(plan, batch, result, callback, progress))

        return in_batches(self, result, plan.settings, task.mode, plan.output_size, run_batch, plan.recorded_size)

    @property
    def is_inpainting_model(self) -> bool:
        """A 9-channel U-Net: latents + mask + masked-image latents (an upscaler's extra channels are a picture)."""
        extra_channels = self.components.denoiser.config.in_channels > self.components.vae.config.latent_channels
        return extra_channels and self.components.upscaler is None

    def prompt_contexts(self, batch: list[Settings], notes: list[str]):
        """The batch's (cond, uncond) schedules (uncond None without an unconditional pass),
        padded to the same number of tokens so that guidance can batch them."""
        first = batch[0]
        prompt = without_lora_tags(first.prompt)  # <lora:...> tags name LoRAs, not words
        if first.prompt_syntax == "plain":
            for what, text in (("prompt", prompt), ("negative prompt", first.negative)):
                note = self.truncation_note(what, text)
                if note and note not in notes:
                    notes.append(note)
        distilled = "the negative prompt is not used: this model is guidance-distilled (--cfg is its input)"
        if first.negative and self.guidance_distilled and distilled not in notes:
            notes.append(distilled)
        evaluations = first.steps * make_sampler(first.sampler, self.components.scheduler_config).order
        cond = self.encode_prompt(prompt, len(batch), evaluations, first.prompt_syntax)
        if not self.two_passes(first.cfg):
            return cond, None
        if not first.negative and getattr(self.components.conditioner, "zeros_for_empty_negative", False):
            return cond, cond.map(lambda c: c.map(torch.zeros_like))  # SDXL: zeros, not the encoding of ""
        uncond = self.encode_prompt(first.negative, len(batch), evaluations, first.prompt_syntax)
        if token_count(cond) == token_count(uncond):
            return cond, uncond
        length = max(token_count(cond), token_count(uncond))
        empty = self.encode_prompt("", 1, 1).first  # one empty chunk: what A1111 pads with
        # SD3's empty prompt is a CLIP chunk then T5's tokens: pad with the chunk alone (its MMDiT
        # reads the context without positions, so chunks after T5's tokens read as before them).
        empty = empty.replace(tokens=empty.tokens[:, : self.components.first_text_encoder.max_tokens + 2])
        return padded(cond, length, empty), padded(uncond, length, empty)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, n: int, steps: int, syntax: str = DEFAULT_PROMPT_SYNTAX) -> ConditioningSchedule:
        """`prompt`'s conditioning for `n` images over `steps` model evaluations, read as
        `syntax` says: plain (the text as it is: encode_text) or a1111 (ldm.prompts: weights,
        BREAK and long prompts in chunks, and the prompt's texts over the steps, encoded
        together as A1111 encodes them)."""
        if syntax == "plain":
            return ConditioningSchedule.of(self.encode_text([prompt] * n))
        schedule = prompt_schedule(prompt, steps)
        parsed = [parse_attention(text) for _, text in schedule]
        device, dtype = self.components.device, self.components.dtype
        if len(parsed) == 1:
            return ConditioningSchedule.of(self.components.conditioner.weighted(parsed * n, device).to(dtype=dtype))
        conds = self.components.conditioner.weighted(parsed, device).to(dtype=dtype)  # one per text
        return ConditioningSchedule(tuple((last, conds.map(lambda t, k=k: t[k : k + 1]).repeat(n)) for k, (last, _) in enumerate(schedule)))

    @property
    def guidance_distilled(self) -> bool:
        return guidance_embedding_width(self.components.denoiser) is not None

    def two_passes(self, cfg: float) -> bool:
        """Whether guidance makes an unconditional pass beside the conditional one."""
        return cfg > 1.0 and not self.guidance_distilled

    def truncation_note(self, what: str, text: str) -> Optional[str]:
        """Says so when the text encoder will not read all of `text` (CLIP reads 75 tokens + 2
        marks); only plain prompts are cut (a1111 prompts go on in 75-token chunks)."""
        cut = self.components.conditioner.truncation(text)
        if cut is None:
            return None
        count, room = cut
        return f"{what} is {count} tokens; the text encoder reads the first {room}, the rest is ignored"

    def noise(self, generators: list[torch.Generator], width: int, height: int) -> torch.Tensor:
        """Unit-variance latent noise (B, C, h, w), image k's from generator k."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = self.latent_shape(len(generators), width, height)
        return randn_tensor(shape, generator=generators, device=self.components.device, dtype=self.components.dtype)

    def sample_batch(
        self,
        batch: BatchContext,
        start: Start,
        size: tuple[int, int],
        generators: list[torch.Generator],
        strength: float = 1.0,
        steps: Optional[int] = None,
        switch_end: Optional[float] = None,
    ) -> torch.Tensor:
        """One sampling run of `batch` from `start` at `size` (width, height), its ControlNets
        prepared for that size; `steps` in the schedule (default: the settings'), the last
        int(steps * strength) of them run, down to `switch_end` where a refiner takes over.
        Returns clean latents (B, C, h, w), or the latents at the switch."""
        settings, device, dtype = batch.settings, self.components.device, self.components.dtype
        if start.read_input:
            batch.clock.lap("encode")
        controls = active_controls(self.controlnets, settings.controls or (), size, device, dtype, batch.notes, self.components.vae)
        start = micro_conditioned(start, settings)
        request = SampleRequest(
            ConditioningSchedule.of(batch.cond).map(start.conditioned), batch.uncond, start.noise, steps or settings.steps, settings.cfg,
            settings.sampler, generators, start.callback or batch.callback, batch.progress, init_latents=start.init_latents,
            strength=strength, known_region=start.known_region, controls=tuple(controls), switch_end=switch_end,
        )  # fmt: skip
        return self.sample(request)

    def _draw(self, plan: Plan, batch: list[Settings], result: GenerationResult, callback, progress: bool) -> list[Image.Image]:
        """One batch of decoded images as `plan` starts them, one per settings in `batch`
        (same prompt, own seeds); not yet finished (inpainting composites them after)."""
        width, height = plan.size
        self.check_model_size(width, height)
        clock = Stopwatch(result.timings)
        dtype = self.components.dtype
        settings = batch[0]
        seeds = [s.seed for s in batch]
        generators = make_generators(seeds)
        cond, uncond = self.prompt_contexts(batch, result.notes)
        clock.lap("text")
        context = BatchContext(settings, seeds, cond, uncond, callback, progress, result.notes, clock)
        start = plan.start(self, generators, context)
        if settings.refiner is None:
            latents = self.sample_batch(context, start, plan.size, generators, plan.strength, plan.steps)
        else:
            latents = sample_with_refiner(self, batch, context, start, plan, generators)
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


def with_strength(options: dict, strength: Optional[float]) -> dict:
    """The request's options with an explicit `strength` argument, when one is given."""
    return options if strength is None else {**options, "strength": strength}
