"""The training config: one YAML file, `stage` picks what is trained.

    stage: text2img          # autoencoder | clip | text2img | inpaint | controlnet | lcm | lora | upscaler (see STAGE_NAMES)
    model: {...}             # ldm.config.ModelConfig: what is built (or the shape to fine-tune)
    data: {...}              # ldm.data.config.DataConfig
    train: {...}             # the shared loop: steps, batch, optimizer, checkpoints, logging
    autoencoder / clip / text2img / inpaint / controlnet / lcm / lora / upscaler: {...}   # stage settings
    validation: {...}        # sample images every N steps (text2img)
    prior: {...}             # DreamBooth's prior preservation (text2img, lora): class images beside the data
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Union

from ldm.control.units import CONTROL_TYPES
from ldm.config import ConfigError, ModelConfig, UNetConfig, UpscalerConfig, apply_overrides, from_dict, one_of, read_yaml, validate_model
from ldm.data.caption_transforms import check_caption_settings
from ldm.data.config import DataConfig
from ldm.diffusion.samplers import SAMPLER_NAMES
from ldm.training.optimizers import OPTIMIZERS
from ldm.training.random_masks import DEFAULT_MASK_KINDS, check_mask_kinds
from ldm.training.speedups import check_speedups

# What `stage` may name; ldm.training.stage_registry.STAGES maps each to its Stage.
STAGE_NAMES = ("autoencoder", "clip", "text2img", "inpaint", "controlnet", "lcm", "lora", "upscaler")
LR_SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
LORA_TARGETS = ("attention", "all")
LORA_LAYOUTS = ("kohya", "peft")


@dataclass
class TrainSection:
    output_dir: str = "runs/ldm"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 4  # per process and micro-batch; global = batch * grad_accum * processes
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    optimizer: str = "adamw"  # adamw | adamw8bit | adafactor (ldm.training.optimizers)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    allow_tf32: bool = False  # CUDA matmuls and convolutions in TF32 (Ampere and later)
    max_grad_norm: Optional[float] = 1.0  # null: no clipping
    mixed_precision: str = "auto"  # auto: bf16 where the device has it, "no" on CPU
    gradient_checkpointing: bool = False
    channels_last: bool = False  # the trained module's convolutions in NHWC (ldm.training.speedups)
    compile: bool = False  # torch.compile the denoiser (minutes of compiling first; denoiser stages)
    ema_decay: Optional[float] = None  # null: no EMA; e.g. 0.9999
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    progress: bool = True
    # true: a text2img/upscaler run may start from a fresh (random) frozen text encoder (smoke
    # tests); false: ldm-train refuses it (ldm.training.config.random_text_encoder).
    allow_random_text_encoder: bool = False


@dataclass
class AutoencoderSection:
    kl_weight: float = 1e-6
    l1_weight: float = 1.0  # reconstruction: L1 as in the LDM autoencoder
    disc_start: Optional[int] = None  # step at which the patch discriminator joins; null: never
    disc_weight: float = 0.5
    disc_layers: int = 3
    disc_channels: int = 64
    scaling_samples: int = 64  # images encoded to measure 1/std of latents
    eval_samples: int = 16  # held-out images for PSNR/SSIM
    # Pixels of the square crop trained at a random place at every step (a convolutional VAE
    # learns the same from pieces, at a fraction of the work); null: the whole picture.
    # Evaluation and the scaling factor always use whole pictures.
    crop: Optional[int] = None


@dataclass
class ClipSection:
    """The image tower trained beside the text tower (the text tower is model.text_encoder)."""

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_head_width: int = 64


@dataclass
class DenoiserSection:
    """What every denoiser stage's section (text2img, inpaint, controlnet, lcm, lora) has: the
    model it starts from, loaded in one place (ldm.training.text2img_stage.load_frozen_parts)."""

    # A model folder (ours or a diffusers SD folder), a single file or a built-in model's name:
    # the frozen VAE and text encoder, and the denoiser to train or to build on.
    init_from: Optional[str] = None
    # What init_from is to the stage, said when it is missing; None: optional.
    init_from_required: ClassVar[Optional[str]] = None


@dataclass
class Text2ImgSection(DenoiserSection):
    # init_from null: VAE/text encoder from vae_from/text_encoder_from (or fresh), the U-Net fresh.
    vae_from: Optional[str] = None  # the autoencoder stage's OUTPUT/vae, or a model folder
    text_encoder_from: Optional[str] = None  # the clip stage's OUTPUT/text_encoder, or a model folder
    min_snr_gamma: Optional[float] = None  # e.g. 5.0 (Hang et al. 2023)
    noise_offset: float = 0.0  # e.g. 0.05: helps very dark/bright images
    # true: cache under OUTPUT/latent_cache; a string: that directory; false: encode every step.
    latent_cache: Union[bool, str] = False
    # > 0: remember the frozen text encoder's embedding of each caption (up to this many MiB),
    # so repeated captions skip the text tower; 0: encode every step.
    text_embedding_memory_mb: float = 0.0


def _default_mask_kinds() -> dict[str, float]:
    return dict(DEFAULT_MASK_KINDS)


@dataclass
class InpaintSection(DenoiserSection):
    """Stage `inpaint`: a text-to-image model folder fine-tuned into a 9-channel inpainting
    model. Loss settings (min_snr_gamma, noise_offset) are the text2img section's."""

    init_from_required = "the text-to-image model folder to fine-tune"
    # Relative weights of the random mask kinds: box, brush, full (whole image), none.
    mask_kinds: dict[str, float] = field(default_factory=_default_mask_kinds)


@dataclass
class ControlNetSection(DenoiserSection):
    """Stage `controlnet`: a ControlNet for a frozen text-to-image model folder. Loss settings
    (min_snr_gamma, noise_offset) are the text2img section's; data.caption_dropout drops text."""

    init_from_required = "the text-to-image model folder the ControlNet steers"
    control_type: str = "canny"  # a preprocessor name (ldm.control.preprocessors), recorded with the export
    # A folder of control maps named after the samples' keys (KEY.png, e.g. tools/make_scenes.py
    # --control-maps' OUT-control/layout); null: the preprocessor computes them from each image.
    control_dir: Optional[str] = None
    control_dropout: float = 0.1  # share of samples trained with a blank control image
    # uniform | cubic: t = T(1 - u^3), most steps at high noise where a map decides the layout
    # (T2I-Adapter's finding: a control learns sooner)
    timesteps: str = "uniform"
    name: Optional[str] = None  # the export's folder name, OUTPUT/controlnet/<name>; default: control_type


@dataclass
class LcmSection(DenoiserSection):
    """Stage `lcm`: latent consistency distillation of a text-to-image model folder (the
    teacher, frozen) into a student U-Net that samples in 1-8 steps with `--sampler lcm`.
    Guidance scales are in --cfg's units (uncond + cfg * (cond - uncond))."""

    init_from_required = "the teacher model folder to distil"
    # The teacher's DDIM solver jumps `skip` of the schedule's timesteps (20 of 1000: the
    # 50 "original" steps LCMScheduler samples over; other values train a mismatched student).
    skip: int = 20
    cfg_min: float = 3.0  # each sample's guidance scale is drawn from [cfg_min, cfg_max]
    cfg_max: float = 13.0
    guidance_embedding: int = 256  # width of the student's guidance-scale embedding (time_cond_proj_dim)
    target_ema_decay: float = 0.95  # the target network follows the student this slowly
    huber_c: float = 0.001  # pseudo-Huber loss: the scale below which it is L2-like
    timestep_scaling: float = 10.0  # boundary scalings' timestep factor (LCMScheduler's default)
    # The LoRA form (LCM-LoRA): only rank-r adapters of the teacher's attention train (no guidance
    # embedding); the export is OUTPUT/lcm-lora.safetensors, applied to the teacher with --lora.
    lora_rank: Optional[int] = None
    lora_alpha: Optional[float] = None  # null = lora_rank
    # Sampling defaults written into the exported model (used when the user gives none).
    sample_steps: int = 4
    sample_cfg: float = 7.5


@dataclass
class LoraSection(DenoiserSection):
    """Stage `lora`: low-rank adapters on a frozen model's U-Net or MMDiT (and optionally its text encoder), written as one small file.
    Loss settings (min_snr_gamma, noise_offset) are the text2img section's."""

    init_from_required = "the model the LoRA adapts"
    rank: int = 4
    alpha: Optional[float] = None  # the delta is scaled by alpha / rank; null = rank (scale 1)
    # attention (to_q/k/v/out; an MMDiT's text-side add_*_proj/to_add_out too) | all (every Linear
    # and Conv2d of a U-Net; an MMDiT's attention and feed-forward layers): ldm.lora.denoiser_targets
    targets: str = "attention"
    # Adapters on the text encoder too (its Linear layers; lora_te_* keys; SDXL: both, lora_te1_/lora_te2_), for words the model
    # never learned: the embeddings are then computed in every step (no text embedding memory).
    text_encoder: bool = False
    # One-token words whose embedding rows train too (textual inversion beside the adapters):
    # a word the text encoder never learned gets a meaning of its own. Written into the file
    # as AUTOMATIC1111's bundled embeddings (bundle_emb.<word>.string_to_param.*).
    tokens: list[str] = field(default_factory=list)
    # kohya (lora_unet_..., what AUTOMATIC1111/ComfyUI read) | peft (unet....lora_A; an MMDiT's
    # transformer....lora_A, diffusers' SD3 layout, its only one); null: kohya, an MMDiT's peft
    layout: Optional[str] = None
    name: str = "lora"  # the file: OUTPUT/<name>.safetensors
    trigger_words: list[str] = field(default_factory=list)  # recorded in the file's metadata
    dtype: str = "fp16"  # fp16 | fp32: the file's tensors


@dataclass
class UpscalerSection(Text2ImgSection):
    """Stage `upscaler`: a text-conditioned super-resolution model (Stable Diffusion's x4
    upscaler's form) on pairs made at every step: the data's pictures (optionally a random crop)
    are the truth, downscaled by the VAE's factor and degraded they are the input. Fresh
    (init_from null: vae_from, text_encoder_from as text2img's; the model config gets an
    `upscaler` section and the U-Net its extra inputs) or fine-tuned from an upscaler model.
    Loss and cache settings (min_snr_gamma, noise_offset, latent_cache, text_embedding_memory_mb)
    are this section's own."""

    # High-resolution pixels of the square crop taken at a random place at every step; null:
    # the whole data.resolution picture (then latent_cache can keep its latents).
    crop: Optional[int] = None
    # Degradations of the downscaled picture, each drawn per picture from [low, high]; null: off.
    blur: Optional[list[float]] = None  # Gaussian blur sigma, in low-resolution pixels
    noise: Optional[list[float]] = None  # Gaussian pixel noise std, in units of the [0, 1] range
    jpeg_quality: Optional[list[float]] = None  # JPEG quality, 1-100
    # The noise level the low-resolution picture is noised to (the U-Net's class label), drawn
    # uniformly from [low, high]; null: [0, model.upscaler.max_noise_level], as SD's upscaler.
    noise_levels: Optional[list[int]] = None


@dataclass
class PriorSection:
    """DreamBooth's prior preservation (stages text2img and lora; ldm.training.prior): every step
    also trains on as many class images as data samples, captioned `class_prompt`; the loss is
    the data's loss + weight x the class images' loss. On when class_prompt is set."""

    class_prompt: str = ""  # e.g. "a photo of a windmill"; "": off
    # A folder of class images (searched recursively); null: num_class_images drawn once by the
    # base model from class_prompt into OUTPUT/class_images (kept: a rerun draws only missing ones).
    class_data: Optional[str] = None
    num_class_images: int = 100
    weight: float = 1.0  # diffusers' prior_loss_weight
    # How the class images are drawn (null sampler: the model's default); image i uses seed + i.
    steps: int = 25
    cfg: float = 7.5
    sampler: Optional[str] = None
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.class_prompt)


# Stages whose loss prior preservation and masked loss weigh (the text2img loss as it is).
PRIOR_STAGES = ("text2img", "lora")


@dataclass
class ValidationSection:
    prompts: list[str] = field(default_factory=list)
    every: int = 0  # 0: only at the end (when there are prompts)
    steps: int = 20
    cfg: float = 5.0
    sampler: Optional[str] = None  # None: dpm++2m, or flow-euler for a flow model
    seed: int = 0


@dataclass
class TrainConfig:
    stage: str = "text2img"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    clip: ClipSection = field(default_factory=ClipSection)
    text2img: Text2ImgSection = field(default_factory=Text2ImgSection)
    inpaint: InpaintSection = field(default_factory=InpaintSection)
    controlnet: ControlNetSection = field(default_factory=ControlNetSection)
    lcm: LcmSection = field(default_factory=LcmSection)
    lora: LoraSection = field(default_factory=LoraSection)
    upscaler: UpscalerSection = field(default_factory=UpscalerSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    prior: PriorSection = field(default_factory=PriorSection)

    def __post_init__(self) -> None:
        validate_train(self)


def validate_train(config: TrainConfig) -> None:
    """Value checks a type check cannot make; each names its key."""

    def at_least(key: str, value: float, low: float) -> None:
        if value < low:
            raise ConfigError(f"{key} must be at least {low}, got {value}")

    train = config.train
    one_of("stage", config.stage, STAGE_NAMES)
    if config.validation.sampler is not None:
        one_of("validation.sampler", config.validation.sampler, SAMPLER_NAMES)
    if config.model.scheduler.prediction_type == "flow" and config.text2img.min_snr_gamma:
        raise ConfigError("text2img.min_snr_gamma is a DDPM weighting; a flow model weighs its loss by model.scheduler.loss_weighting")
    one_of("train.lr_schedule", train.lr_schedule, LR_SCHEDULES)
    one_of("train.optimizer", train.optimizer, OPTIMIZERS)
    one_of("train.mixed_precision", train.mixed_precision, MIXED_PRECISION)
    for key in ("max_steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every", "max_bad_steps"):
        at_least(f"train.{key}", getattr(train, key), 1)
    at_least("train.warmup_steps", train.warmup_steps, 0)
    if train.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {train.lr}")
    if train.ema_decay is not None and not 0.0 < train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in (0, 1), got {train.ema_decay}")
    if len(train.adam_betas) != 2:
        raise ConfigError("train.adam_betas must be a list of two numbers")
    if not train.output_dir:
        raise ConfigError("train.output_dir is empty")
    if not 0.0 <= config.data.caption_dropout <= 1.0:
        raise ConfigError(f"data.caption_dropout must be in [0, 1], got {config.data.caption_dropout}")
    try:
        check_caption_settings(config.data.captions)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    at_least("text2img.text_embedding_memory_mb", config.text2img.text_embedding_memory_mb, 0)
    if config.text2img.min_snr_gamma is not None and config.text2img.min_snr_gamma <= 0:
        raise ConfigError("text2img.min_snr_gamma must be positive")
    check_init_from(config)
    if config.model.sdxl is not None and getattr(getattr(config, config.stage), "text_encoder_from", None):
        raise ConfigError(f"{config.stage}.text_encoder_from names one open_clip text encoder; an SDXL-shaped model (model.sdxl) has two CLIP text models: start from init_from")
    try:
        check_mask_kinds(config.inpaint.mask_kinds)
    except ValueError as error:
        raise ConfigError(f"inpaint.mask_kinds: {error}") from None
    check_speedups(config)
    check_controlnet_section(config)
    check_lcm_section(config)
    check_lora_section(config)
    check_upscaler_section(config)
    check_autoencoder_crop(config)
    check_prior_section(config)
    check_masked_loss(config)
    check_buckets(config)
    at_least("validation.steps", config.validation.steps, 1)
    at_least("validation.every", config.validation.every, 0)


def check_init_from(config: TrainConfig) -> None:
    section = getattr(config, config.stage)
    if isinstance(section, DenoiserSection) and section.init_from_required and not section.init_from:
        raise ConfigError(f"{config.stage}.init_from is required: {section.init_from_required}")


# Stages whose text encoder, when no source names one, is built fresh and then frozen.
FRESH_TEXT_ENCODER_STAGES = ("text2img", "upscaler")


def random_text_encoder(config: TrainConfig) -> Optional[str]:
    """Why this run would train against a random, frozen text encoder (its captions would be
    noise to the denoiser), naming the keys that fix it; None when a source is set, the stage
    builds no fresh encoder, or train.allow_random_text_encoder opts in."""
    if config.stage not in FRESH_TEXT_ENCODER_STAGES or config.train.allow_random_text_encoder:
        return None
    section = getattr(config, config.stage)
    if section.init_from or section.text_encoder_from or config.model.text_encoder.pretrained:
        return None
    name = config.stage
    if config.model.sdxl is not None:
        return f"the text encoders would be random and frozen: set {name}.init_from (an SDXL folder or single file; train.allow_random_text_encoder=true for a smoke test)"
    return (
        f"the text encoder would be random and frozen: set {name}.text_encoder_from (a clip stage's OUTPUT/text_encoder "
        f"or a model folder), model.text_encoder.pretrained or {name}.init_from "
        f"(train.allow_random_text_encoder=true for a smoke test)"
    )


def check_controlnet_section(config: TrainConfig) -> None:

    section = config.controlnet
    one_of("controlnet.control_type", section.control_type, CONTROL_TYPES)
    one_of("controlnet.timesteps", section.timesteps, ("uniform", "cubic"))
    if not 0.0 <= section.control_dropout <= 1.0:
        raise ConfigError(f"controlnet.control_dropout must be in [0, 1], got {section.control_dropout}")
    data_maps = config.data.control_column or config.data.control_key
    if data_maps and config.stage != "controlnet":
        raise ConfigError("data.control_column and data.control_key are for stage controlnet")
    if data_maps and section.control_dir:
        raise ConfigError("the control maps come from data.control_column/control_key or from controlnet.control_dir, not both")
    if section.control_dir and (config.data.crop != "center" or config.data.random_flip):
        raise ConfigError("controlnet.control_dir needs data.crop: center and data.random_flip: false (the maps are not cropped at random with their images)")


def check_lcm_section(config: TrainConfig) -> None:
    section = config.lcm
    total = config.model.scheduler.num_train_timesteps
    if section.skip < 1 or total % section.skip:
        raise ConfigError(f"lcm.skip must divide the schedule's {total} timesteps, got {section.skip}")
    if not 1.0 <= section.cfg_min <= section.cfg_max:
        raise ConfigError(f"lcm.cfg_min and lcm.cfg_max must satisfy 1 <= cfg_min <= cfg_max, got {section.cfg_min}, {section.cfg_max}")
    if not 0.0 <= section.target_ema_decay < 1.0:
        raise ConfigError(f"lcm.target_ema_decay must be in [0, 1), got {section.target_ema_decay}")
    for key in ("guidance_embedding", "sample_steps"):
        if getattr(section, key) < 1:
            raise ConfigError(f"lcm.{key} must be at least 1, got {getattr(section, key)}")
    if section.huber_c <= 0:
        raise ConfigError(f"lcm.huber_c must be positive, got {section.huber_c}")
    if section.lora_rank is not None and section.lora_rank < 1:
        raise ConfigError(f"lcm.lora_rank must be at least 1, got {section.lora_rank}")


def check_lora_section(config: TrainConfig) -> None:
    section = config.lora
    if section.rank < 1:
        raise ConfigError(f"lora.rank must be at least 1, got {section.rank}")
    if section.alpha is not None and section.alpha <= 0:
        raise ConfigError(f"lora.alpha must be positive, got {section.alpha}")
    one_of("lora.targets", section.targets, LORA_TARGETS)
    if section.layout is not None:
        one_of("lora.layout", section.layout, LORA_LAYOUTS)
    one_of("lora.dtype", section.dtype, ("fp16", "fp32"))
    if not section.name or "/" in section.name:
        raise ConfigError(f"lora.name must be a plain file name, got {section.name!r}")
    for word in section.tokens:
        if not word or any(c.isspace() or c == "." for c in word) or word != word.lower():
            raise ConfigError(f"lora.tokens: {word!r} is not a lower-case word without spaces or dots")


def check_prior_section(config: TrainConfig) -> None:
    prior = config.prior
    if not prior.enabled:
        if prior.class_data:
            raise ConfigError("prior.class_data is set but prior.class_prompt is empty (the class images' caption, and what switches prior preservation on)")
        return
    if config.stage not in PRIOR_STAGES:
        raise ConfigError(f"prior preservation is for stages {' and '.join(PRIOR_STAGES)}, not {config.stage}")
    if prior.weight < 0:
        raise ConfigError(f"prior.weight must not be negative, got {prior.weight}")
    for key in ("num_class_images", "steps"):
        if getattr(prior, key) < 1:
            raise ConfigError(f"prior.{key} must be at least 1, got {getattr(prior, key)}")
    if prior.sampler is not None:
        one_of("prior.sampler", prior.sampler, SAMPLER_NAMES)
    if not prior.class_data and not getattr(config, config.stage).init_from:
        raise ConfigError(f"prior preservation needs class images: set prior.class_data, or {config.stage}.init_from (the base model that draws them)")


def check_masked_loss(config: TrainConfig) -> None:
    data = config.data
    if data.mask_dir and not data.masked_loss:
        raise ConfigError("data.mask_dir is set but data.masked_loss is false")
    if not data.masked_loss:
        return
    if config.stage not in PRIOR_STAGES:
        raise ConfigError(f"data.masked_loss is for stages {' and '.join(PRIOR_STAGES)}, not {config.stage}")
    if not data.mask_dir and data.source != "imagefolder":
        raise ConfigError(f"data.masked_loss with data.source {data.source} needs data.mask_dir (masks named after the sample keys)")
    if data.crop != "center" or data.random_flip:
        raise ConfigError("data.masked_loss needs data.crop: center and data.random_flip: false (masks are cropped as their images at each step, not at random)")


# Stages that train on squares of their own size: aspect-ratio buckets would bring them nothing.
SQUARE_STAGES = {
    "autoencoder": "the VAE learns from square pictures (autoencoder.crop) whatever their shape",
    "upscaler": "the upscaler learns from square crops (upscaler.crop) and measures on square validation pictures",
    "clip": "CLIP resizes every picture to its square clip.image_size",
}


def check_buckets(config: TrainConfig) -> None:
    """data.buckets is for the stages that train the denoiser on whole pictures."""
    if not config.data.buckets:
        return
    if config.stage in SQUARE_STAGES:
        raise ConfigError(f"data.buckets is not used by stage {config.stage}: {SQUARE_STAGES[config.stage]}; turn data.buckets off")


def check_autoencoder_crop(config: TrainConfig) -> None:
    crop, factor = config.autoencoder.crop, config.model.vae.downsample_factor
    if crop is not None and (not 0 < crop <= config.data.resolution or crop % factor):
        raise ConfigError(f"autoencoder.crop must be a multiple of the VAE's factor {factor} within data.resolution {config.data.resolution}, got {crop}")


def check_upscaler_section(config: TrainConfig) -> None:
    section = config.upscaler
    ranges = {"blur": (0.0, None), "noise": (0.0, 1.0), "jpeg_quality": (1.0, 100.0), "noise_levels": (0, None)}
    for key, (lowest, highest) in ranges.items():
        value = getattr(section, key)
        if value is None:
            continue
        if len(value) != 2 or not lowest <= value[0] <= value[1] or (highest is not None and value[1] > highest):
            within = f"[{lowest}, {highest}]" if highest is not None else f"at least {lowest}"
            raise ConfigError(f"upscaler.{key} must be [low, high] with low <= high, {within}; got {value}")
    if config.stage != "upscaler":
        return
    if not isinstance(config.model.denoiser, UNetConfig):
        raise ConfigError("stage upscaler trains a U-Net (model.denoiser.kind: unet): the noise level is a U-Net class label")
    if not section.init_from:
        upscaler_model(config.model)
    check_upscaler_sizes(config)


def upscaler_model(model: ModelConfig) -> None:
    """A fresh upscaler's model config: an `upscaler` section (defaults unless given), and a
    U-Net that reads the picture beside the latents and a class label per noise level."""
    model.upscaler = model.upscaler or UpscalerConfig()
    model.denoiser.in_channels = model.vae.latent_channels + 3
    if model.denoiser.num_class_embeds is None:
        model.denoiser.num_class_embeds = model.upscaler.max_noise_level + 1
    validate_model(model)


def check_upscaler_sizes(config: TrainConfig) -> None:
    """The trained size (the crop, else the data's) must make whole U-Net latents; the noise
    levels must be ones the model knows."""
    section, model = config.upscaler, config.model
    size = section.crop or config.data.resolution
    key = "upscaler.crop" if section.crop else "data.resolution"
    multiple = model.vae.downsample_factor * 2 ** (len(model.denoiser.block_out_channels) - 1)
    if section.crop is not None and not 0 < section.crop <= config.data.resolution:
        raise ConfigError(f"upscaler.crop must be in [1, data.resolution {config.data.resolution}], got {section.crop}")
    if size % multiple:
        raise ConfigError(f"{key} must be a multiple of {multiple} (the VAE's factor x the U-Net's downsampling), got {size}")
    if model.upscaler is not None and section.noise_levels and section.noise_levels[1] > model.upscaler.max_noise_level:
        raise ConfigError(f"upscaler.noise_levels must stay within model.upscaler.max_noise_level ({model.upscaler.max_noise_level}), got {section.noise_levels}")


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Reads the YAML file, applies `a.b=value` overrides, checks every key and value."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return from_dict(TrainConfig, data)
