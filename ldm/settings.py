"""One settings object for a generation request, from the command line to the pipeline to
the PNG `parameters` chunk (and the HTTP API): each option is declared once, here, with its
command-line flag, its name in AUTOMATIC1111's PNG parameters and HTTP API, its help text
and its check. Adding an option is a one-place change.

    settings = Settings(prompt="a lake at dawn", cfg=7.5, seed=7)
    check_settings(settings, "txt2img")          # GenerationError naming the first bad value
    pipe.generate(settings)                      # or pipe.generate("a lake", cfg=7.5, seed=7)
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ldm.control.units import ControlUnit, check_control_units, png_fields as control_png_fields
from ldm.diffusion.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES, check_sampler_name
from ldm.builtin_models import UnknownModelError, resolve_model
from ldm.errors import LdmError
from ldm.hires import (
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_HIRES_UPSCALER,
    HIRES_UPSCALERS,
    HiresPass,
    HiresSize,
    check_hires_values,
    hires_size,
    hires_upscaler_name,
    is_model_upscaler,
    parse_resize,
    short_upscaler_name,
    upscaler_folder_problem,
)
from ldm.lora.refs import LoraRef, check_weight, lora_hashes, parse_lora_flag, request_loras
from ldm.prompts.syntax import DEFAULT_PROMPT_SYNTAX, PROMPT_SYNTAXES, check_prompt_syntax

MODES = ("txt2img", "img2img", "inpaint", "upscale")
DRAWING_MODES = ("txt2img", "img2img", "inpaint")  # not upscale: its size is the input's times the model's scale
EDIT_MODES = ("img2img", "inpaint")
TXT2IMG = ("txt2img",)
UPSCALE = ("upscale",)
# How much of the picture img2img / inpainting repaints when the user does not say
# (img2img: AUTOMATIC1111's default denoising strength); an upscale draws from pure noise.
DEFAULT_STRENGTH = {"txt2img": 1.0, "img2img": 0.75, "inpaint": 1.0, "upscale": 1.0}
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; A1111 and diffusers accept this range
RANDOM_SEEDS = 2**32  # a random seed is drawn below this, as AUTOMATIC1111 does
MIN_TILE = 16  # low-resolution pixels a side of an upscale's tiles: smaller ones are mostly overlap
DEFAULT_STEPS = 20
DEFAULT_CFG = 7.5
VAE_TILING = ("auto", "on", "off")  # ldm.pipeline.tiling
DEFAULT_REFINER_SWITCH = 0.8  # AUTOMATIC1111's


Pad = tuple[int, int, int, int]  # left, top, right, bottom, in pixels
SizeHW = tuple[int, int]  # (height, width) or (top, left) in pixels, in diffusers' order
MICRO_CONDITIONING = ("original_size", "crop_top_left", "target_size")  # SDXL's time ids, in their order


class GenerationError(LdmError, ValueError):
    """A request that cannot be generated; the message says which value is wrong."""





@dataclass(frozen=True)
class Option:
    """How one setting shows outside Python."""

    help: str
    flag: Optional[str] = None  # command-line flag; None: not a flag (the prompt is positional)
    label: Optional[str] = None  # key in the PNG `parameters` line (AUTOMATIC1111's name); None: not written
    api: Optional[str] = None  # field of AUTOMATIC1111's /sdapi/v1 requests
    metavar: Optional[str] = None
    parse: Callable[[str], Any] = str  # command-line text -> value
    show: Callable[[Any], str] = str  # value -> PNG text
    modes: tuple[str, ...] = MODES  # the commands that take it
    expand: Optional[Callable[[Any], dict[str, str]]] = None  # value -> several PNG "Key: value" pairs
    repeat: bool = False  # a flag given once per item (the value is a tuple of them)


def option(default, **spec) -> Any:
    return field(default=default, metadata={"option": Option(**spec)})


def parse_pad(text: str) -> Pad:
    """'L,T,R,B' or one number for all sides."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 4
    if len(values) != 4:
        raise ValueError(f"must be LEFT,TOP,RIGHT,BOTTOM (or one number) in pixels, got {text!r}")
    return values  # type: ignore[return-value]


def parse_pair(text: str, shape: str, least: int = 1) -> SizeHW:
    """'A,B': two whole numbers of pixels, each at least `least`."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < least:
        raise ValueError(f"must be {shape} in pixels (each at least {least}), got {text!r}")
    return values  # type: ignore[return-value]


def show_pair(pair: SizeHW) -> str:
    return " ".join(map(str, pair))  # space-separated so that no comma splits it


def size_id_option(what: str, shape: str, default: str, api: str) -> Any:
    """One of SDXL's micro-conditioning settings (a pair of pixel numbers in diffusers' order,
    its name `api`): what the model is told instead of the default."""
    least = 0 if shape == "TOP,LEFT" else 1
    return option(
        None, help=f"SDXL micro-conditioning: {what} the model is told of, {shape} in pixels (default: {default}; diffusers' {api})",
        flag="--" + api.replace("crops_coords", "crop").replace("_", "-"), label=api.replace("crops_coords", "crop").replace("_", " ").capitalize(),
        metavar=",".join(part[0] for part in shape.split(",")), parse=lambda text: parse_pair(text, shape, least),
        show=show_pair, modes=DRAWING_MODES, api=api,
    )  # fmt: skip


def show_float(value: float) -> str:
    return f"{value:g}"

TILE_HELP = ("upscale in overlapping tiles of PX low-resolution pixels a side, blended without seams "
             "(default: the whole picture at once when it fits in memory, else the largest tiles that fit)")  # fmt: skip


def parse_on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(f"must be on or off, got {text!r}")
    return text == "on"


def parse_vae_tiling(text: str) -> str:
    if text not in VAE_TILING:
        raise ValueError(f"must be one of {', '.join(VAE_TILING)}, got {text!r}")
    return text


@dataclass(frozen=True)
class Settings:
    """A generation request. None means "the default": the model's size for width/height,
    a random seed, the mode's strength (txt2img 1, img2img 0.75, inpaint 1), all --n at once,
    and for sampler, steps and cfg the model's own sampling defaults, else dpm++2m, 20, 7.5
    (`with_defaults`); no hires fix (with a hires scale or resize: strength 0.7, the first
    pass's steps, the Latent upscaler: `hires_pass`)."""

    prompt: str = option("", help="what to draw", api="prompt")
    negative: str = option(
        "", help="negative prompt: what to steer away from", flag="--negative", metavar="TEXT", api="negative_prompt"
    )
    steps: Optional[int] = option(
        None,
        help=f"denoising steps (default: the model's own, else {DEFAULT_STEPS})",
        flag="--steps",
        label="Steps",
        api="steps",
        parse=int,
    )
    sampler: Optional[str] = option(
        None,
        help=f"one of {', '.join(SAMPLER_NAMES)} (default: the model's own, else {DEFAULT_SAMPLER})",
        flag="--sampler",
        label="Sampler",
        api="sampler_name",
        metavar="NAME",
    )
    cfg: Optional[float] = option(
        None,
        help="classifier-free guidance scale; <= 1 turns guidance off (default: the model's own, else "
        f"{DEFAULT_CFG:g}); a guidance-distilled (LCM) model takes it as an input, one pass per step",
        flag="--cfg",
        label="CFG scale",
        api="cfg_scale",
        parse=float,
        show=show_float,
    )
    seed: Optional[int] = option(
        None, help="seed of the first image (default: random, printed)", flag="--seed", label="Seed", api="seed", parse=int
    )
    width: Optional[int] = option(
        None, help="image width in pixels, a multiple of 8 (default: the model's size)", flag="--width", api="width", parse=int,
        modes=DRAWING_MODES,
    )
    height: Optional[int] = option(
        None, help="image height in pixels, a multiple of 8 (default: the model's size)", flag="--height", api="height", parse=int,
        modes=DRAWING_MODES,
    )
    n: int = option(1, help="number of images", flag="--n", parse=int)
    batch_size: Optional[int] = option(
        None,
        help="images per denoiser batch (default: as many as fit in memory, up to --n)",
        flag="--batch-size",
        api="batch_size",
        parse=int,
    )
    vae_tiling: str = option(
        "auto",
        help="encode and decode pictures larger than a 512 px tile in overlapping tiles: auto (when a whole "
        "pass would not fit in memory; the PNG then says 'VAE tiling: on'), on, off",
        flag="--vae-tiling",
        metavar="|".join(VAE_TILING),
        parse=parse_vae_tiling,
        expand=lambda value: {"VAE tiling": "on"} if value == "on" else {},
    )
    strength: Optional[float] = option(
        None,
        help="how much of the picture is repainted: 0 returns it (through the VAE), 1 ignores it "
        "(default: 0.75 for --init-image, 1 for inpainting)",
        flag="--strength",
        label="Denoising strength",
        api="denoising_strength",
        metavar="S",
        parse=float,
        show=show_float,
        modes=EDIT_MODES,
    )
    # The hires fix (txt2img only), AUTOMATIC1111's: on when a scale or a resize is given.
    hires_strength: Optional[float] = option(
        None,
        help="hires fix: how much the second pass repaints the upscaled picture: 0 keeps it, 1 draws anew "
        f"(default {DEFAULT_HIRES_STRENGTH:g})",
        flag="--hires-strength",
        label="Denoising strength",
        api="denoising_strength",
        metavar="S",
        parse=float,
        show=show_float,
        modes=TXT2IMG,
    )
    hires_scale: Optional[float] = option(
        None,
        help="hires fix, as AUTOMATIC1111 has it: draw at --width x --height (default: the model's size), "
        "upscale by SCALE (--hires-upscaler), then repaint image-to-image at the larger size "
        "(--hires-strength, --hires-steps); 2 on a 128 px model writes 256 px",
        flag="--hires-scale",
        label="Hires upscale",
        api="hr_scale",
        metavar="SCALE",
        parse=float,
        show=show_float,
        modes=TXT2IMG,
    )
    hires_resize: Optional[tuple[int, int]] = option(
        None,
        help="hires fix to this size instead of by a scale (wins over --hires-scale): 0 for one side keeps "
        "the aspect ratio; another aspect ratio is covered and its overflow cropped from the middle",
        flag="--hires-resize",
        label="Hires resize",
        metavar="WIDTHxHEIGHT",
        parse=parse_resize,
        show=lambda size: "{}x{}".format(*size),
        modes=TXT2IMG,
    )
    hires_steps: Optional[int] = option(
        None,
        help="hires fix: the steps its second pass runs (default, or 0: --steps); as in AUTOMATIC1111, the "
        "last N of a schedule of N / strength steps",
        flag="--hires-steps",
        label="Hires steps",
        api="hr_second_pass_steps",
        metavar="N",
        parse=int,
        modes=TXT2IMG,
    )
    hires_upscaler: Optional[str] = option(
        None,
        help="hires fix: how the first picture is enlarged: latent (its latents, bilinear; or latent-bicubic, "
        "latent-nearest, ...), lanczos or nearest (decoded, resized, encoded again), or a diffusion upscaler "
        "model's name or folder (decoded, upscaled with the prompt and seed, resized, encoded); AUTOMATIC1111's names "
        f"work too (default {short_upscaler_name(DEFAULT_HIRES_UPSCALER)}; all: "
        f"{', '.join(map(short_upscaler_name, HIRES_UPSCALERS))})",
        flag="--hires-upscaler",
        label="Hires upscaler",
        api="hr_upscaler",
        metavar="NAME|DIR",
        parse=lambda text: check_hires_upscaler(hires_upscaler_name(text)),
        show=hires_upscaler_name,
        modes=TXT2IMG,
    )
    refiner: Optional[str] = option(
        None,
        help="an SDXL refiner (its diffusers folder or single .safetensors file) that draws the last part of the steps "
        "(after --refiner-switch), as AUTOMATIC1111's refiner",
        flag="--refiner", label="Refiner", metavar="PATH", show=lambda path: Path(path).name,
        modes=DRAWING_MODES,
    )  # fmt: skip
    refiner_switch: Optional[float] = option(
        None,
        help="with --refiner: the share of the way from noise to picture where the refiner takes over, "
        f"between 0 and 1 (default {DEFAULT_REFINER_SWITCH:g}; AUTOMATIC1111's \"Refiner switch at\")",
        flag="--refiner-switch", label="Refiner switch at", metavar="S", parse=float,
        show=show_float, modes=DRAWING_MODES, api="refiner_switch_at",
    )  # fmt: skip
    original_size: Optional[SizeHW] = size_id_option("the original picture size", "HEIGHT,WIDTH", "the drawn size", "original_size")
    crop_top_left: Optional[SizeHW] = size_id_option("the top-left corner of the crop", "TOP,LEFT", "0,0", "crops_coords_top_left")
    target_size: Optional[SizeHW] = size_id_option("the target size", "HEIGHT,WIDTH", "the drawn size", "target_size")
    mask_blur: float = option(
        4.0,
        help="Gaussian blur (sigma, pixels) of the mask before thresholding, and the feather of the blend "
        "over the input; 0: hard edges",
        flag="--mask-blur",
        label="Mask blur",
        api="mask_blur",
        metavar="PX",
        parse=float,
        show=show_float,
        modes=("inpaint",),
    )
    crop_to_mask: Optional[int] = option(
        None,
        help="inpaint only a crop around the mask (PADDING pixels wider on each side) at the model's "
        "resolution (or --width/--height) and paste it back: small edits on large images",
        flag="--crop-to-mask",
        label="Masked area padding",
        api="inpaint_full_res_padding",
        metavar="PADDING",
        parse=int,
        modes=("inpaint",),
    )
    pad: Optional[Pad] = option(
        None,
        help="outpaint: extend the canvas by these many pixels (one number: all sides) and paint the new border",
        flag="--pad",
        label="Outpaint padding",  # not in AUTOMATIC1111; space-separated so that no comma splits it
        metavar="LEFT,TOP,RIGHT,BOTTOM",
        parse=parse_pad,
        show=lambda pad: " ".join(map(str, pad)),
        modes=("inpaint",),
    )
    # A diffusion upscaler's (ldm.pipeline.upscale); AUTOMATIC1111's API has no field for them.
    noise_level: Optional[int] = option(
        None,
        help="noise added to the low-resolution picture before it is upscaled: 0 keeps every detail (and its "
        "flaws), higher lets the model redraw more (default: the model's own, 20 for Stable Diffusion's x4 upscaler)",
        flag="--noise-level", label="Noise level", metavar="N", parse=int, modes=UPSCALE,
    )  # fmt: skip
    tile: Optional[int] = option(None, help=TILE_HELP, flag="--tile", label="Tile size", metavar="PX", parse=int, modes=UPSCALE)
    color_fix: Optional[bool] = option(
        None,
        help="keep the input's broad colours under the detail the upscaler draws (StableSR's colour correction: "
        "mends a small VAE's colour drift) (default: the model's own; off for Stable Diffusion's x4 upscaler)",
        flag="--color-fix", label="Color fix", metavar="on|off", parse=parse_on_off,
        show=lambda on: "on" if on else "off", modes=UPSCALE,
    )  # fmt: skip

    # ControlNet units; their command-line flags are ldm.cli.control_options' (one unit per --control).
    controls: Optional[tuple[ControlUnit, ...]] = option(
        None, help="control images steering the ControlNets", expand=control_png_fields, modes=DRAWING_MODES
    )
    # LoRAs added to the denoiser for this request only; the PNG records them (and the prompt's
    # <lora:NAME:WEIGHT> tags) as A1111's `Lora hashes`.
    loras: tuple[LoraRef, ...] = option(
        (),
        help="add a LoRA (a .safetensors file, or a NAME in --lora-dir) at WEIGHT (default 1); repeatable. "
        "The prompt can name them too, as AUTOMATIC1111 does: <lora:NAME:WEIGHT>",
        flag="--lora",
        metavar="FILE[:WEIGHT]",
        parse=parse_lora_flag,
        expand=lambda files: {"Lora hashes": lora_hashes(files)},
        repeat=True,
    )
    lora_dir: Optional[str] = option(
        None, help="folder of NAME.safetensors LoRAs that <lora:NAME:WEIGHT> and --lora NAME name "
        "(default: the model folder's loras/)", flag="--lora-dir", metavar="DIR"
    )
    prompt_syntax: Optional[str] = option(
        None,
        help="how prompts are read: a1111 (AUTOMATIC1111's (word:1.2), [word], BREAK, long prompts in "
        "75-token chunks, [from:to:when], [a|b]) or plain (the text as it is, cut after 75 tokens) "
        f"(default: the model's own, else {DEFAULT_PROMPT_SYNTAX})",
        flag="--prompt-syntax",
        api="prompt_syntax",  # not A1111's: its clients leave it out and get the server's default
        metavar="|".join(PROMPT_SYNTAXES),
        parse=check_prompt_syntax,
        # Written only when not A1111's reading, so that A1111 reads the PNG's prompt as we did.
        expand=lambda syntax: {"Prompt syntax": syntax} if syntax != DEFAULT_PROMPT_SYNTAX else {},
    )

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def with_defaults(self, model_defaults: Optional[dict[str, Any]] = None) -> "Settings":
        """These settings with sampler, steps, cfg and prompt syntax where None taken from
        `model_defaults` (a model config's `sampling` section; None values in it count as
        unset), else from the generation defaults."""
        generation = {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "cfg": DEFAULT_CFG, "prompt_syntax": DEFAULT_PROMPT_SYNTAX}
        model = {name: value for name, value in (model_defaults or {}).items() if value is not None}
        if self.sampler is None and model.get("sampler", DEFAULT_SAMPLER) not in SAMPLER_NAMES:
            raise GenerationError(
                f"the model's default sampler (sampling.sampler in its config) is {model['sampler']!r}, "
                f"not one of {', '.join(SAMPLER_NAMES)}; pass --sampler"
            )
        chosen = {**generation, **model}
        return self.replace(**{name: chosen[name] for name in generation if getattr(self, name) is None})

    def strength_for(self, mode: str) -> float:
        return DEFAULT_STRENGTH[mode] if self.strength is None else self.strength

    @property
    def hires_fix(self) -> bool:
        """Whether the hires fix runs: a hires scale or resize is given."""
        return self.hires_scale is not None or self.hires_resize is not None

    def hires_pass(self) -> HiresPass:
        """The hires fix's second pass: its steps (0 or None: the first pass's), strength and upscaler, defaults applied."""
        strength = DEFAULT_HIRES_STRENGTH if self.hires_strength is None else self.hires_strength
        return HiresPass(self.hires_steps or self.steps, strength, hires_upscaler_name(self.hires_upscaler or DEFAULT_HIRES_UPSCALER))

    def hires_shown(self, name: str) -> Any:
        """A hires field as the PNG records it (A1111's choices): only with the fix on; the
        strength and upscaler with their defaults, the scale unless a resize wins, the steps
        unless they are the first pass's."""
        if not self.hires_fix:
            return None
        if name == "hires_strength":
            return self.hires_pass().strength
        if name == "hires_upscaler":
            return self.hires_pass().upscaler
        if name == "hires_scale" and self.hires_resize is not None:
            return None
        if name == "hires_steps" and not self.hires_steps:
            return None
        return getattr(self, name)

    @property
    def refiner_switch_at(self) -> float:
        """Where the refiner takes over, its default applied."""
        return DEFAULT_REFINER_SWITCH if self.refiner_switch is None else self.refiner_switch

    def lora_files(self) -> list[tuple[Path, float]]:
        """Every LoRA this request asks for (--lora, then the prompt's tags) as (file, weight);
        ValueError naming one that is not found."""
        return request_loras(tuple(self.loras or ()), self.prompt, self.lora_dir)

    def with_seed(self) -> "Settings":
        """These settings with a concrete seed (a random one when none was given)."""
        return self if self.seed is not None else self.replace(seed=random.randrange(RANDOM_SEEDS))

    def png_fields(self, mode: str, model: str, width: int, height: int) -> dict[str, str]:
        """The "Key: value" pairs of the PNG `parameters` line, in AUTOMATIC1111's order
        (the prompts have lines of their own). Settings the pipeline has not filled in from
        the model show the generation defaults."""
        shown = self.with_defaults()
        fields = {}
        for each in fields_of(mode):
            spec = option_of(each)
            if each.name == "n":  # after the seed, as AUTOMATIC1111 writes them (width and height have no label)
                fields.update({"Size": f"{width}x{height}", "Model": model})
            value = getattr(shown, each.name)
            if each.name == "strength":
                value = shown.strength_for(mode)
            elif each.name == "loras":
                value = shown.lora_files()
            elif each.name.startswith("hires_"):
                value = shown.hires_shown(each.name)
            elif each.name == "refiner_switch":
                value = shown.refiner_switch_at if shown.refiner is not None else None
            if spec.expand is not None and value:
                fields.update(spec.expand(value))
            if spec.label is None or value is None:
                continue
            if each.name == "crop_to_mask":
                fields["Inpaint area"] = "Only masked"
            fields[spec.label] = spec.show(value)
        return fields


def option_of(each: dataclasses.Field) -> Option:
    return each.metadata["option"]


def flag_of(name: str) -> str:
    """The command-line flag of the setting `name` (for messages)."""
    return option_of(next(each for each in dataclasses.fields(Settings) if each.name == name)).flag


def fields_of(mode: str) -> list[dataclasses.Field]:
    """The settings a mode takes, in declaration order."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    return [each for each in dataclasses.fields(Settings) if mode in option_of(each).modes]


def as_settings(prompt: "str | Settings", options: dict) -> Settings:
    """The Python API's two spellings: a Settings (with optional changes) or a prompt and keywords."""
    if isinstance(prompt, Settings):
        return prompt.replace(**options) if options else prompt
    return Settings(prompt=prompt, **options)


@dataclass(frozen=True)
class Limits:
    """Upper bounds checked before any work; a user with the hardware for more raises them."""

    max_pixels: int = 2048 * 1024  # per image (width x height), inputs at their own size included
    max_steps: int = 1000  # a model's training timesteps: more steps than that repeat timesteps
    max_images: int = 1000  # --n per command
    max_mask_blur: float = 256.0  # pixels (sigma); AUTOMATIC1111's slider stops at 64
    max_step_seconds: float = 60.0  # one denoising step's estimated full-resolution attention (ldm.pipeline.step_time)


DEFAULT_LIMITS = Limits()


def check_size(width: int, height: int, limits: Limits, what: str = "image") -> None:
    if width * height > limits.max_pixels:
        raise GenerationError(
            f"{what} {width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{limits.max_pixels / 1e6:.1f} (raise it with --max-pixels if your hardware has the memory)"
        )


def check_settings(settings: Settings, mode: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raises GenerationError naming the first bad value; cheap, so it runs before any loading."""
    for name in ("width", "height"):
        value = getattr(settings, name)
        if value is not None and (value <= 0 or value % 8):
            raise GenerationError(f"{name} must be a positive multiple of 8, got {value}")
    if settings.width and settings.height:
        check_size(settings.width, settings.height, limits)
    # sampler, steps and cfg may still be None (the model's defaults): checked once filled in.
    if settings.steps is not None and not 1 <= settings.steps <= limits.max_steps:
        raise GenerationError(f"steps must be between 1 and {limits.max_steps}, got {settings.steps}")
    if settings.cfg is not None and (not math.isfinite(settings.cfg) or settings.cfg < 0):
        raise GenerationError(f"cfg must be a finite number >= 0, got {settings.cfg:g}")
    if not 1 <= settings.n <= limits.max_images:
        raise GenerationError(f"n must be between 1 and {limits.max_images}, got {settings.n}")
    if settings.batch_size is not None and settings.batch_size < 1:
        raise GenerationError(f"batch size must be at least 1, got {settings.batch_size}")
    if settings.vae_tiling not in VAE_TILING:
        raise GenerationError(f"vae tiling must be one of {', '.join(VAE_TILING)}, got {settings.vae_tiling!r}")
    if settings.seed is not None and not 0 <= settings.seed <= MAX_SEED - (settings.n - 1):
        raise GenerationError(f"seed must be between 0 and 2**63-1 (with room for n images), got {settings.seed}")
    strength = settings.strength_for(mode)
    if not 0.0 <= strength <= 1.0:  # NaN fails this too
        raise GenerationError(f"strength must be between 0 and 1, got {strength:g}")
    try:
        if settings.sampler is not None:
            check_sampler_name(settings.sampler)
        if settings.prompt_syntax is not None:
            check_prompt_syntax(settings.prompt_syntax)
    except ValueError as error:
        raise GenerationError(str(error)) from None
    if mode == "inpaint":
        check_inpaint_settings(settings, limits)
    check_hires_settings(settings, mode, limits)
    check_refiner_settings(settings, mode)
    check_micro_conditioning(settings)
    if mode == "upscale":
        check_upscale_settings(settings)
    try:
        check_control_units(settings.controls or ())
        for path, weight in settings.lora_files():  # weights given in Python skip the parsers' check
            check_weight(weight, f"LoRA {Path(path).stem}")
    except ValueError as error:
        raise GenerationError(str(error)) from None


def check_inpaint_settings(settings: Settings, limits: Limits) -> None:
    if not 0 <= settings.mask_blur <= limits.max_mask_blur:  # NaN fails this too
        raise GenerationError(f"mask blur must be between 0 and {limits.max_mask_blur:g} pixels, got {settings.mask_blur:g}")
    if settings.crop_to_mask is not None and settings.crop_to_mask < 0:
        raise GenerationError(f"crop-to-mask padding must not be negative, got {settings.crop_to_mask}")
    pad = settings.pad
    if pad is not None and len(pad) != 4:
        raise GenerationError(f"pad needs 4 values (left, top, right, bottom), got {len(pad)}")
    if pad is not None and min(pad) < 0:
        raise GenerationError(f"pad must not be negative, got {','.join(map(str, pad))}")


def check_hires_upscaler(name: str) -> str:
    """`name`, or ValueError unless it is one of the hires fix's upscalers or an upscaler model
    (a built-in name or a folder whose config says it is one), checked without loading it."""
    if not is_model_upscaler(name):
        return name
    try:
        path = resolve_model(name)
    except UnknownModelError as error:
        choices = ", ".join(map(short_upscaler_name, HIRES_UPSCALERS))
        raise ValueError(f"unknown hires upscaler {name!r}; choose one of {choices}, or an upscaler model's name or folder ({error})") from None
    problem = upscaler_folder_problem(path)
    if problem:
        raise ValueError(f"hires upscaler: {problem}")
    return name


def check_hires_settings(settings: Settings, mode: str, limits: Limits) -> None:
    given = [name.replace("_", " ") for name in HIRES_FIELDS if getattr(settings, name) is not None]
    if given and mode != "txt2img":
        raise GenerationError(f"the hires fix is for text to image only, as in AUTOMATIC1111 ({given[0]} given to {mode})")
    if given and not settings.hires_fix:
        raise GenerationError(f"{given[0]} needs a hires scale or resize (--hires-scale, --hires-resize)")
    values = (settings.hires_scale, settings.hires_resize, settings.hires_strength, settings.hires_steps)
    try:
        check_hires_values(*values, limits.max_steps)
        if settings.hires_upscaler is not None:
            check_hires_upscaler(settings.hires_upscaler)
    except ValueError as error:
        raise GenerationError(str(error)) from None
    if settings.hires_fix and settings.width and settings.height:
        check_hires_size(hires_size(settings.width, settings.height, settings.hires_scale, settings.hires_resize), limits)


def check_refiner_settings(settings: Settings, mode: str) -> None:
    if settings.refiner is None:
        if settings.refiner_switch is not None:
            raise GenerationError("a refiner switch needs a refiner (--refiner PATH)")
        return
    if mode not in DRAWING_MODES:
        raise GenerationError(f"a refiner draws the last steps of text to image, img2img or inpaint, not of {mode}")
    if not 0.0 < settings.refiner_switch_at < 1.0:  # NaN fails this too
        raise GenerationError(f"the refiner switch must be between 0 and 1 (both excluded), got {settings.refiner_switch_at:g}")


def check_micro_conditioning(settings: Settings) -> None:
    """Values given in Python or the API are checked as the command line's parse_pair checks them."""
    for name in MICRO_CONDITIONING:
        pair, least = getattr(settings, name), 0 if name == "crop_top_left" else 1
        if pair is not None and (len(pair) != 2 or min(pair) < least):
            raise GenerationError(f"{name} must be two whole numbers of pixels, each at least {least}, got {pair}")


HIRES_FIELDS = ("hires_strength", "hires_scale", "hires_resize", "hires_steps", "hires_upscaler")


def check_hires_size(found: HiresSize, limits: Limits) -> None:
    if min(found.size) <= 0:
        raise GenerationError("hires size {}x{} is empty: give a larger hires scale or resize".format(*found.size))
    check_size(*found.upscaled, limits, "hires fix size")


def check_upscale_settings(settings: Settings) -> None:
    """The upscale settings a model is not needed for (the noise level's top is the model's)."""
    if settings.noise_level is not None and settings.noise_level < 0:
        raise GenerationError(f"noise level must be 0 or more, got {settings.noise_level}")
    if settings.tile is not None and settings.tile < MIN_TILE:
        raise GenerationError(f"tile must be at least {MIN_TILE} pixels, got {settings.tile}")


def check_input_size(settings: Settings, mode: str, image_size: tuple[int, int], limits: Limits = DEFAULT_LIMITS) -> None:
    """The sizes an input picture leads to (its own size, or the outpainted canvas) within the limits."""
    width, height = image_size
    if mode == "inpaint" and settings.pad is not None:
        left, top, right, bottom = settings.pad
        width, height = width + left + right, height + top + bottom
        check_size(width, height, limits, "outpainted canvas")
    if settings.width is None or settings.height is None:
        check_size(width, height, limits, "input picture")
