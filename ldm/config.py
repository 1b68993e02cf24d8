"""YAML -> typed dataclasses.

Every section of a config is a dataclass; loading checks each key against the fields of
its section, so a misspelt key is an error that names it (with its dotted path) instead
of a silently ignored setting. Command-line overrides use the same dotted paths:
`denoiser.layers_per_block=1`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml

from ldm.errors import LdmError


class ConfigError(LdmError, ValueError):
    """A config that cannot be used; the message names the offending key or file."""


# ----------------------------------------------------------------------------- sections


@dataclass
class VAEConfig:
    """diffusers AutoencoderKL. Four 2x downsamplings would be KL-f16; SD's KL-f8 has four
    blocks, three of which downsample."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2
    norm_num_groups: int = 32
    sample_size: int = 512
    # Latents are multiplied by this before diffusion, so that they have roughly unit
    # variance. null: computed by the autoencoder stage from data (1 / std of latents).
    scaling_factor: Optional[float] = 0.18215
    # Taken off latents before scaling (SD3's 16-channel VAE: 0.0609); null for SD 1.x/2.x/XL.
    shift_factor: Optional[float] = None

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class TextEncoderConfig:
    """open_clip text tower. `arch` names an open_clip model config (e.g. ViT-H-14, read
    from open_clip's bundled JSON, offline) whose text settings replace the ones below."""

    arch: Optional[str] = None
    width: int = 512
    heads: int = 8
    layers: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 512
    mlp_ratio: float = 4.0
    # Which hidden states condition the U-Net: "last" (SD 1.x style) or "penultimate" (SD 2).
    layer: str = "last"
    # A local OpenCLIP checkpoint (.safetensors) whose text tower weights are loaded.
    pretrained: Optional[str] = None


@dataclass
class UNetConfig:
    """diffusers UNet2DConditionModel; cross_attention_dim null = the text encoder width."""

    kind: str = field(default="unet", init=False)  # the tag of `model.denoiser` (ldm.diffusion.backbones)
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    layers_per_block: int = 2
    attention_head_dim: Union[int, list[int]] = 8
    transformer_layers_per_block: Union[int, list[int]] = 1  # per level (SDXL: [1, 2, 10])
    down_block_types: list[str] = field(
        default_factory=lambda: ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    )
    up_block_types: list[str] = field(
        default_factory=lambda: ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    )
    norm_num_groups: int = 32
    sample_size: int = 64
    cross_attention_dim: Optional[int] = None
    use_linear_projection: bool = False
    upcast_attention: bool = False
    # Width of a guidance-scale embedding added to the timestep's (LCM students); null = none.
    time_cond_proj_dim: Optional[int] = None
    # Class labels the timestep embedding adds (an upscaler's noise level: max_noise_level + 1
    # of them, diffusers' num_class_embeds); null = none.
    num_class_embeds: Optional[int] = None


@dataclass
class DiTConfig:
    """diffusers PixArtTransformer2DModel (PixArt-alpha): patches of the latents, adaLN-single
    timestep conditioning, cross-attention to the text tokens. Defaults: PixArt-alpha at 512 px."""

    kind: str = field(default="dit", init=False)
    layers: int = 28
    heads: int = 16
    head_dim: int = 72  # width = heads x head_dim (1152)
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int = 4  # the prediction's channels (the latent channels)
    # PixArt's learned variance: twice the output channels, the second half unused here.
    learned_sigma: bool = False
    sample_size: int = 64  # latent cells per side the position embeddings are made for
    caption_channels: Optional[int] = None  # null = the text encoder width

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


@dataclass
class MMDiTConfig:
    """diffusers SD3Transformer2DModel (Stable Diffusion 3's MMDiT), its own key names: image
    patches and text tokens attend jointly; the timestep and the pooled text vector modulate
    every block. Defaults: SD3-medium's shape. The text side is model.text_encoder: its hidden
    states are the tokens (zero-padded along the width up to joint_attention_dim, as SD3 pads
    its CLIPs' states to T5's width), its pooled projection (embed_dim wide) the pooled vector."""

    kind: str = field(default="mmdit", init=False)
    num_layers: int = 24
    num_attention_heads: int = 24
    attention_head_dim: int = 64  # width = heads x head_dim (1536)
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    sample_size: int = 128  # latent cells per side trained at (the position table's centre crop)
    pos_embed_max_size: int = 192  # latent patches per side the position table covers
    joint_attention_dim: Optional[int] = None  # null = the text encoder's width
    caption_projection_dim: Optional[int] = None  # null = the model width (it must equal it)
    pooled_projection_dim: Optional[int] = None  # null = the text encoder's embed_dim
    dual_attention_layers: list[int] = field(default_factory=list)  # SD3.5's MMDiT-X blocks
    qk_norm: Optional[str] = None  # null | rms_norm (SD3.5)

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


# `model.denoiser` is one of these, told apart by its `kind` (the first is the default).
DENOISER_SECTIONS = (UNetConfig, DiTConfig, MMDiTConfig)
DenoiserConfig = Union[UNetConfig, DiTConfig, MMDiTConfig]


@dataclass
class SchedulerConfig:
    """Noise schedule shared by training and sampling (a diffusers scheduler config)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | cosine
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"  # epsilon | v_prediction | flow (rectified flow: the beta keys do not apply)
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    rescale_betas_zero_snr: bool = False
    # Flow matching only (ldm.diffusion.process.RectifiedFlow): the resolution shift and how
    # training draws noise levels and weighs them (SD3's choices).
    shift: float = 1.0
    timestep_sampling: str = "uniform"  # uniform | logit_normal | mode
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    loss_weighting: str = "none"  # none | sigma_sqrt | cosmap


@dataclass
class SamplingDefaults:
    """How the model samples best when the user does not say (e.g. an LCM student: lcm, 4
    steps, cfg 1.5); null = the generation defaults. Checked when used (ldm.settings)."""

    sampler: Optional[str] = None
    steps: Optional[int] = None
    cfg: Optional[float] = None
    prompt_syntax: Optional[str] = None  # a1111 | plain (ldm.prompts)


@dataclass
class UpscalerConfig:
    """A super-resolution model (Stable Diffusion's x4 upscaler): its denoiser reads the noisy
    latents beside the low-resolution picture (3 more input channels, at the latents' size),
    noised by `low_res_scheduler` to a noise level it is told as a class label."""

    max_noise_level: int = 350  # the highest noise level trained (and accepted at sampling)
    noise_level: int = 20  # the noise added to the low-resolution picture by default when sampling
    low_res_scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    )
    # Whether an upscale keeps the input's broad colours by default (ldm.pipeline.color_fix):
    # for a small VAE whose colours drift; Stable Diffusion's x4 upscaler has none.
    color_fix: bool = False


@dataclass
class ClipTextConfig:
    """A transformers CLIPTextModel (SDXL's text encoders; CLIP's BPE tokenizer, built offline).
    Defaults: OpenAI CLIP ViT-L/14's text model, SDXL's first encoder."""

    width: int = 768
    heads: int = 12
    layers: int = 12
    mlp_width: int = 3072
    activation: str = "quick_gelu"  # quick_gelu (OpenAI CLIP) | gelu (OpenCLIP)
    # Set: a CLIPTextModelWithProjection whose pooled output is projected to this width.
    projection_dim: Optional[int] = None
    context_length: int = 77
    vocab_size: int = 49408


def _big_g_text() -> ClipTextConfig:
    return ClipTextConfig(width=1280, heads=20, layers=32, mlp_width=5120, activation="gelu", projection_dim=1280)


@dataclass
class SDXLConfig:
    """An SDXL-shaped model's text side and size conditioning (ldm.models.sdxl_model): two CLIP
    text models whose penultimate layers are concatenated (the denoiser's cross-attention width),
    the second's projected pooled output beside six size numbers (original height, width, crop
    top, left, target height, width) in the U-Net's `text_time` embedding. `model.text_encoder`
    is then unused. Defaults: SDXL base's."""

    text_encoder: ClipTextConfig = field(default_factory=ClipTextConfig)
    text_encoder_2: ClipTextConfig = field(default_factory=_big_g_text)
    time_embed_dim: int = 256  # the sinusoidal width of each size number (addition_time_embed_dim)
    # An empty negative prompt conditions as zeros at sampling (force_zeros_for_empty_prompt).
    zeros_for_empty_prompt: bool = True


@dataclass
class ModelConfig:
    name: str = "ldm"
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    denoiser: DenoiserConfig = field(default_factory=UNetConfig)  # {kind: unet | dit | mmdit, ...its settings}
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    upscaler: Optional[UpscalerConfig] = None  # set: a super-resolution model (stage upscaler)
    sdxl: Optional[SDXLConfig] = None  # set: an SDXL-shaped model (two CLIP text models, size conditioning)

    def __post_init__(self) -> None:
        validate_model(self)


BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal", "mode")  # ldm.diffusion.process.RectifiedFlow's
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")
TEXT_LAYERS = ("last", "penultimate")


def one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    """A setting with a fixed set of values: the error names the key and the choices."""
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(choices)}")


def check_flow_keys(scheduler: SchedulerConfig) -> None:
    one_of("model.scheduler.timestep_sampling", scheduler.timestep_sampling, TIMESTEP_SAMPLINGS)
    one_of("model.scheduler.loss_weighting", scheduler.loss_weighting, LOSS_WEIGHTINGS)
    if scheduler.shift <= 0 or scheduler.logit_std <= 0:
        raise ConfigError(f"model.scheduler.shift and logit_std must be positive, got {scheduler.shift}, {scheduler.logit_std}")


def validate_model(config: ModelConfig) -> None:
    """Value checks that a type check cannot make; each names its key."""
    one_of("model.scheduler.beta_schedule", config.scheduler.beta_schedule, BETA_SCHEDULES)
    one_of("model.scheduler.prediction_type", config.scheduler.prediction_type, PREDICTION_TYPES)
    check_flow_keys(config.scheduler)
    one_of("model.text_encoder.layer", config.text_encoder.layer, TEXT_LAYERS)
    if config.text_encoder.layer == "penultimate" and config.text_encoder.layers < 2:
        raise ConfigError("model.text_encoder.layer 'penultimate' needs at least 2 layers")
    section, denoiser = "model.denoiser", config.denoiser
    if isinstance(denoiser, MMDiTConfig):
        validate_mmdit(denoiser, config.text_encoder)
    if config.vae.latent_channels not in (denoiser.out_channels,):
        raise ConfigError(
            f"{section}.out_channels ({denoiser.out_channels}) must equal "
            f"model.vae.latent_channels ({config.vae.latent_channels})"
        )
    if config.sdxl is not None:
        validate_sdxl(config)
    if config.upscaler is not None:
        validate_upscaler(config)
    elif denoiser.in_channels not in (config.vae.latent_channels, 2 * config.vae.latent_channels + 1):
        raise ConfigError(
            f"{section}.in_channels is {denoiser.in_channels}; expected "
            f"{config.vae.latent_channels} (text-to-image) or "
            f"{2 * config.vae.latent_channels + 1} (inpainting)"
        )


def validate_mmdit(denoiser: MMDiTConfig, text: TextEncoderConfig) -> None:
    """Fills the MMDiT's text widths left null from the text encoder, and checks that it can
    read what the text encoder gives (an `arch` is resolved only when built: then they are set)."""
    key = "model.denoiser"
    if denoiser.caption_projection_dim is None:
        denoiser.caption_projection_dim = denoiser.width
    if denoiser.caption_projection_dim != denoiser.width:
        raise ConfigError(f"{key}.caption_projection_dim ({denoiser.caption_projection_dim}) must equal num_attention_heads x attention_head_dim ({denoiser.width})")
    if denoiser.qk_norm not in (None, "rms_norm"):
        raise ConfigError(f"{key}.qk_norm is {denoiser.qk_norm!r}; expected null or rms_norm")
    if denoiser.sample_size > denoiser.pos_embed_max_size * denoiser.patch_size:
        raise ConfigError(f"{key}.sample_size ({denoiser.sample_size}) exceeds pos_embed_max_size x patch_size ({denoiser.pos_embed_max_size * denoiser.patch_size})")
    if text.arch is not None:
        if None in (denoiser.joint_attention_dim, denoiser.pooled_projection_dim):
            raise ConfigError(f"{key}.joint_attention_dim and pooled_projection_dim must be set with model.text_encoder.arch (its widths are read only when built)")
        return
    if denoiser.joint_attention_dim is None:
        denoiser.joint_attention_dim = text.width
    if denoiser.pooled_projection_dim is None:
        denoiser.pooled_projection_dim = text.embed_dim
    if denoiser.joint_attention_dim < text.width:
        raise ConfigError(f"{key}.joint_attention_dim ({denoiser.joint_attention_dim}) is narrower than model.text_encoder.width ({text.width})")
    if denoiser.pooled_projection_dim != text.embed_dim:
        raise ConfigError(f"{key}.pooled_projection_dim ({denoiser.pooled_projection_dim}) must equal model.text_encoder.embed_dim ({text.embed_dim}): the pooled vector is the text encoder's projection")


# ----------------------------------------------------------------------------- loading


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Builds dataclass `cls` from nested dicts, checking keys and types by dotted path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(data).__name__}")
    if cls in OLD_FORMS:
        data = OLD_FORMS[cls](data, path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, path)
    if origin in (Union, types.UnionType) and _tagged(args):
        return _tagged_section(args, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{path} must be {hint.__name__}, got {value!r}")
    return value


def _tagged(options: tuple) -> bool:
    """A union of sections that each state their `kind` (model.denoiser's)."""
    return all(dataclasses.is_dataclass(o) and "kind" in {f.name for f in dataclasses.fields(o)} for o in options)


def _tagged_section(options: tuple, value: Any, path: str) -> Any:
    """The section whose kind `value["kind"]` names (the first option's without one)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be a mapping, got {value!r}")
    sections = {option.kind: option for option in options}
    kind = value.get("kind", options[0].kind)
    one_of(f"{path}.kind", kind, tuple(sections))
    return from_dict(sections[kind], {k: v for k, v in value.items() if k != "kind"}, path)


def _one_denoiser_section(data: dict, path: str) -> dict:
    """A model section in the form written before the tagged `denoiser` section (`denoiser:
    unet | dit` beside both a `unet:` and a `dit:` section) in the current form: the chosen
    section becomes `denoiser`; the other is checked, as it was then, and dropped. An old
    section beside a current `denoiser` mapping (a dotted override such as
    `model.unet.sample_size=32` on a current file) is merged into it when its kind matches."""
    sections = {section.kind: section for section in DENOISER_SECTIONS}
    old = {kind: data[kind] for kind in sections if kind in data}
    chosen = data.get("denoiser")
    if not old and not isinstance(chosen, str):
        return data
    if chosen is None or isinstance(chosen, str):
        chosen = chosen or DENOISER_SECTIONS[0].kind
        one_of(f"{path}.denoiser", chosen, tuple(sections))
        chosen = {"kind": chosen}
    if not isinstance(chosen, dict):
        return data  # the type check names it
    merged = dict(chosen)
    for kind, section in old.items():
        from_dict(sections[kind], section if section is not None else {}, f"{path}.{kind}")  # named as written
        if kind == chosen.get("kind", DENOISER_SECTIONS[0].kind):
            merged.update(section or {})
    return {**{k: v for k, v in data.items() if k not in sections}, "denoiser": merged}


# Sections whose earlier forms are still read: section -> (data, dotted path) -> current data.
OLD_FORMS: dict[type, Callable[[dict, str], dict]] = {ModelConfig: _one_denoiser_section}


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def model_to_dict(config: ModelConfig) -> dict:
    """A model config as model.yaml holds it: a model that is not an upscaler (SDXL-shaped) has
    no `upscaler` (`sdxl`) key, so the files of every other model read as they did before."""
    data = to_dict(config)
    for optional in ("upscaler", "sdxl"):
        if data.get(optional) is None:
            data.pop(optional, None)
    return data


def parse_yaml(text: str, source: str | Path) -> Any:
    """Plain data from YAML text (safe_load); errors in one line naming `source`. A tag that
    asks for a Python object (!!python/...) is refused as such, not as broken YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        tag = re.search(r"tag '([^']+)'", str(error.problem))
        if tag is None:
            raise ConfigError(f"{source} is not valid YAML: {error.problem}") from None
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        line = f" line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ConfigError(
            f"{source}{line} has a Python/unsafe YAML tag ({name}) that is refused: settings are read as plain data only"
        ) from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML: {first}") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` sets data['a']['b']['c']; the value is parsed as YAML (numbers, lists)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def model_config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data, "model")


def validate_upscaler(config: ModelConfig) -> None:
    """An upscaler's denoiser reads 3 picture channels beside the latents and a class label per
    noise level."""
    upscaler, denoiser = config.upscaler, config.denoiser
    if not 0 <= upscaler.noise_level <= upscaler.max_noise_level:
        raise ConfigError(f"model.upscaler.noise_level must be in [0, max_noise_level {upscaler.max_noise_level}], got {upscaler.noise_level}")
    if getattr(denoiser, "num_class_embeds", None) is None or denoiser.num_class_embeds <= upscaler.max_noise_level:
        raise ConfigError(f"an upscaler's model.denoiser.num_class_embeds must exceed model.upscaler.max_noise_level ({upscaler.max_noise_level})")
    expected = config.vae.latent_channels + 3
    if denoiser.in_channels != expected:
        raise ConfigError(f"an upscaler's model.denoiser.in_channels must be the latent channels + 3 (the picture): {expected}, got {denoiser.in_channels}")


def validate_sdxl(config: ModelConfig) -> None:
    """An SDXL-shaped model: a U-Net, a projected second encoder, text layers to stop before."""
    sdxl = config.sdxl
    if not isinstance(config.denoiser, UNetConfig):
        raise ConfigError("an SDXL-shaped model (model.sdxl) has a U-Net denoiser (model.denoiser.kind: unet)")
    if sdxl.text_encoder_2.projection_dim is None:
        raise ConfigError("model.sdxl.text_encoder_2.projection_dim must be set: its projected pooled output conditions the U-Net")
    for key in ("text_encoder", "text_encoder_2"):
        encoder = getattr(sdxl, key)
        one_of(f"model.sdxl.{key}.activation", encoder.activation, ("quick_gelu", "gelu"))
        if encoder.layers < 2:
            raise ConfigError(f"model.sdxl.{key}.layers must be at least 2 (SDXL reads the penultimate layer)")
    if sdxl.time_embed_dim < 1 or sdxl.time_embed_dim % 2:
        raise ConfigError(f"model.sdxl.time_embed_dim must be a positive even number, got {sdxl.time_embed_dim}")
