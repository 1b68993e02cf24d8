"""Model folders: save (atomic), load (safetensors only), and read diffusers SD folders.

Our format is one directory:

    model.yaml                 the resolved model config (everything needed to rebuild)
    vae.safetensors            diffusers AutoencoderKL state dict
    text_encoder.safetensors   open_clip TextTransformer state dict (open_clip's key names)
    denoiser.safetensors       the denoiser's state dict (a diffusers module: ldm.diffusion.backbones)
                               (folders written before the DiT have unet.safetensors; still read)

A folder may leave out parts it shares with another model folder: `parts_from: ../base` in
model.yaml (relative to the folder) names where the missing weight files are read, checked
against this folder's config like its own (the built-in scenes-lcm shares scenes' VAE and
text encoder this way).

Weights are never read from pickles: unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

import ldm.config as config_module
from ldm.config import ConfigError, ModelConfig, from_dict, model_config_from_dict, model_to_dict, parse_yaml, to_dict
from ldm.models.autoencoder import build_vae
from ldm.models.components import Components, build_components
from ldm.diffusion.backbones import backbone_in_diffusers_folder, backbone_of
from ldm.diffusion.schedule import FLOW_PREDICTION
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import HFClipTextEncoder, build_text_encoder
from ldm.models.weights import (
    PICKLE_SUFFIXES,
    ModelError,
    check_fits,
    load_state,
    quiet_loading,
    read_safetensors,
    refuse_pickle,
    stored_shapes,
    write_safetensors,
)
from ldm.files import clean_leftovers, recover_folder, replacing_folder
from ldm.formats.diffusers_sd3 import check_flow_scheduler, is_sd3_folder, sd3_text_folders, sd3_text_side
from ldm.formats.diffusers_sdxl import SECOND_ENCODER, check_sdxl_role, is_sdxl_folder, is_sdxl_refiner_folder, refiner_text_side, sdxl_text_side
from ldm.formats.sdxl_refiner_file import is_sdxl_refiner_file, load_refiner_file
from ldm.formats.diffusers_upscaler import check_upscaler_denoiser, diffusers_upscaler
from ldm.formats.single_file import load_single_file

CONFIG_FILE = "model.yaml"
FORMAT_VERSION = 1
WEIGHT_FILES = {"vae": "vae.safetensors", "text_encoder": "text_encoder.safetensors", "denoiser": "denoiser.safetensors"}
OLD_WEIGHT_FILES = {"denoiser": "unet.safetensors"}  # read when the current name is absent


# ----------------------------------------------------------------------------- saving


def save_model(components: Components, path: str | Path) -> Path:
    """Writes the model folder atomically: a crash leaves the old folder (or none), never half."""
    if components.config is None:
        raise ModelError("only models built from an ldm config can be saved in ldm's format")
    path = Path(path)
    with staged_folder(path, is_model_folder, "model folder") as staging:
        document = {"format_version": FORMAT_VERSION, "model": model_to_dict(components.config)}
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
        text_tower = getattr(components.first_text_encoder, "tower", components.first_text_encoder)
        states = {
            "vae": components.vae.state_dict(),
            "text_encoder": text_tower.state_dict(),
            "denoiser": components.denoiser.state_dict(),
        }
        for name, state in states.items():
            write_safetensors(state, staging / WEIGHT_FILES[name])
    return path


@contextmanager
def staged_folder(path: Path, replaceable: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yields an empty staging folder beside `path`; when the block ends without an error,
    the staging folder becomes `path` (an old folder there is replaced only if
    `replaceable(old)`, checked before any work); on an error it is removed. The old folder
    stays reachable until the new one is whole (ldm.files); leftovers of earlier crashed
    saves of `path` are recovered or removed first."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and not replaceable(path):
        raise ModelError(f"{path} exists and is not a {what}; not replacing it")
    in_block = False
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(parent, path.name)
        with replacing_folder(path) as staging:
            in_block = True
            yield staging
            in_block = False
    except OSError as error:
        if in_block:  # the caller's own write failed: its error, unchanged
            raise
        raise ModelError(f"cannot write {what} {path}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------- loading


def is_model_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / "model_index.json").is_file()


def load_model(path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Components:
    """Loads our model folder, a diffusers-format Stable Diffusion folder or a single
    original-layout .safetensors checkpoint, for inference."""
    path = recover_folder(path)
    if not path.exists():
        raise ModelError(f"model folder not found: {path}")
    if path.is_file():

        components = load_single_file(path)
    elif (path / CONFIG_FILE).is_file():
        components = _load_ours(path)
    elif (path / "model_index.json").is_file():
        components = load_diffusers_folder(path)
    else:
        raise ModelError(f"{path} is not a model folder: it has no {CONFIG_FILE} or model_index.json")
    return components.to(device=device, dtype=dtype).eval()


def _read_document(file: Path):
    """A model or component YAML file as plain data; errors (a Python tag too) in one line."""
    try:
        return parse_yaml(file.read_text(), file)
    except ConfigError as error:
        raise ModelError(str(error)) from None


def read_model_config(path: Path) -> ModelConfig:
    document = _read_document(path / CONFIG_FILE)
    if not isinstance(document, dict) or "model" not in document:
        raise ModelError(f"{path / CONFIG_FILE} has no 'model' section")
    try:
        return model_config_from_dict(document["model"])
    except ConfigError as error:
        raise ModelError(f"{path / CONFIG_FILE}: {error}") from None


def _load_ours(path: Path) -> Components:
    config = read_model_config(path)
    files = {name: weights_path(path, name) for name in WEIGHT_FILES}
    for name, file in files.items():
        if not file.is_file():
            pickled = [p.name for p in path.glob(f"{name}.*") if p.suffix in PICKLE_SUFFIXES]
            if pickled:
                refuse_pickle(path / pickled[0])
            raise ModelError(f"{path} is missing {_shown(file, path)}")
    # A pretrained text tower is already in text_encoder.safetensors: don't read it twice.
    config.text_encoder.pretrained = None
    # Build on the meta device: the weights are about to be replaced anyway.
    with torch.device("meta"):
        components = build_components(config)
    # Every part is checked against its file's header before any memory is allocated.
    for name, module in components.modules().items():
        target = getattr(module, "tower", module)
        check_fits(target, stored_shapes(files[name]), name, CONFIG_FILE, _shown(files[name], path))
    for name, module in components.modules().items():
        target = getattr(module, "tower", module)
        state = read_safetensors(files[name])
        target.to_empty(device="cpu")
        load_state(target, state, name)
    _restore_buffers(components)
    return components


def _shown(file: Path, folder: Path) -> str:
    """`file` as messages name it: relative to the model folder when inside it, else in full."""
    return str(file.relative_to(folder)) if file.is_relative_to(folder) else str(file)


def weight_file(path: Path, name: str) -> str:
    """The file that holds `name`'s weights in the model folder `path` (an older name if only that exists)."""
    old = OLD_WEIGHT_FILES.get(name)
    if old and not (path / WEIGHT_FILES[name]).is_file() and (path / old).is_file():
        return old
    return WEIGHT_FILES[name]


def parts_source(path: Path) -> Path | None:
    """The model folder that model.yaml's `parts_from` names (relative to `path`), or None."""
    document = _read_document(path / CONFIG_FILE)
    shared = document.get("parts_from") if isinstance(document, dict) else None
    if shared is None:
        return None
    source = (path / str(shared)).resolve()
    if not (source / CONFIG_FILE).is_file():
        raise ModelError(f"{path / CONFIG_FILE}: parts_from {shared} is not a model folder")
    return source


def weights_path(path: Path, name: str) -> Path:
    """`name`'s weights file for the model folder `path`: its own, else its parts_from folder's."""
    own = path / weight_file(path, name)
    source = parts_source(path) if not own.is_file() else None
    return source / weight_file(source, name) if source is not None else own


def _restore_buffers(components: Components) -> None:
    _restore_text_buffers(components.first_text_encoder)
    backbone_of(components.denoiser).restore_buffers()


def _restore_text_buffers(text_encoder) -> None:
    """Non-persistent buffers are not in the weights files; rebuild the ones we know."""
    tower = getattr(text_encoder, "tower", None)
    if tower is not None and getattr(tower, "attn_mask", None) is not None:
        tower.attn_mask = tower.build_causal_mask()


def load_diffusers_folder(path: Path, refiner: bool = False) -> Components:
    """A diffusers-format Stable Diffusion folder, offline, safetensors only (its denoiser
    is found by its subfolder: unet/ in Stable Diffusion's); SDXL's (two text encoders:
    ldm.formats.diffusers_sdxl), an SDXL refiner's only as a `refiner`; SD3's (an MMDiT,
    two CLIPs and maybe a T5: ldm.formats.diffusers_sd3); an x4 upscaler's
    (StableDiffusionUpscalePipeline) with its upscaler description."""
    from diffusers import AutoencoderKL

    upscaler = diffusers_upscaler(path)
    sd3 = is_sd3_folder(path)
    if not sd3:
        check_sdxl_role(path, refiner)
    backbone = backbone_in_diffusers_folder(path)
    denoiser_folder = backbone.diffusers_folder
    text_folders, tokenizers = _text_folders(path, refiner)
    for sub in (denoiser_folder, "vae", *text_folders, *tokenizers, "scheduler"):
        if not (path / sub).is_dir():
            raise ModelError(f"{path} has model_index.json but no {sub}/ folder")
    for sub in (denoiser_folder, "vae", *text_folders):
        if not any((path / sub).glob("*.safetensors")):
            pickled = [p for p in (path / sub).iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickled:
                refuse_pickle(pickled[0])
            raise ModelError(f"{path / sub} has no .safetensors weights")
    options = {"local_files_only": True, "use_safetensors": True}
    try:
        with quiet_loading():
            denoiser = backbone.load_pretrained(path / denoiser_folder, **options)
            vae = AutoencoderKL.from_pretrained(path / "vae", **options)
            if sd3:
                conditioner = sd3_text_side(path, denoiser.config.joint_attention_dim, **options)
            else:
                conditioner = _diffusers_text_side(path, refiner, options)
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"cannot read diffusers folder {path}: {first}") from None
    scheduler_config = _own_scheduler_config(path, scheduler_config)
    if upscaler is not None:
        check_upscaler_denoiser(path, denoiser, vae.config.latent_channels, upscaler)
    return Components(
        vae=vae,
        conditioner=conditioner,
        denoiser=denoiser,
        scheduler_config=scheduler_config,
        config=None,
        name=path.name,
        upscaler=upscaler,
    )


def _own_scheduler_config(path: Path, saved: dict) -> dict:
    """scheduler_config.json without diffusers' bookkeeping keys; a flow-matching scheduler's
    (SD3's) marked as a flow model's, as our flow configs are (ldm.diffusion.schedule)."""
    config = {k: v for k, v in saved.items() if not k.startswith("_")}
    if str(saved.get("_class_name", "")).startswith("FlowMatch"):
        check_flow_scheduler(path, config)
        config["prediction_type"] = FLOW_PREDICTION
    return config


def _text_folders(path: Path, refiner: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The text encoder and tokenizer subfolders a diffusers folder needs."""
    if is_sd3_folder(path):
        return sd3_text_folders(path)
    if refiner:
        return (SECOND_ENCODER[0],), (SECOND_ENCODER[1],)
    if is_sdxl_folder(path):
        return ("text_encoder", SECOND_ENCODER[0]), ("tokenizer", SECOND_ENCODER[1])
    return ("text_encoder",), ("tokenizer",)


def _diffusers_text_side(path: Path, refiner: bool, options: dict) -> TextConditioner:
    from transformers import CLIPTextModel, CLIPTokenizer

    if refiner:
        return refiner_text_side(path, **options)
    text_model = CLIPTextModel.from_pretrained(path / "text_encoder", **options)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    return sdxl_text_side(path, text_model, tokenizer, **options) or TextConditioner([HFClipTextEncoder(text_model, tokenizer)])


def load_refiner(path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Components:
    """An SDXL refiner's diffusers folder (ldm.formats.diffusers_sdxl) or single file
    (ldm.formats.sdxl_refiner_file), for inference; ModelError in one line for anything else."""
    path = Path(path)
    if path.is_file():
        refuse_pickle(path)
        components = load_refiner_file(path)
    elif (path / "model_index.json").is_file():
        components = load_diffusers_folder(path, refiner=True)
    else:
        raise ModelError(f"refiner {path} is not an SDXL refiner (a diffusers folder or a .safetensors file)")
    return components.to(device=device, dtype=dtype).eval()


def is_refiner_path(path: Path) -> bool:
    """Whether `path` is an SDXL refiner's diffusers folder or single file."""
    return is_sdxl_refiner_folder(path) or is_sdxl_refiner_file(path)


def load_model_or_refiner(path: str | Path) -> Components:
    """What ldm-convert converts: any model load_model reads, or an SDXL refiner."""
    path = recover_folder(path)
    return load_refiner(path) if is_refiner_path(path) else load_model(path)


# ----------------------------------------------------------------------------- single components

# A component folder holds one trained part, as the autoencoder and clip training stages
# export them:  component.yaml ({format_version, kind, config}) + <kind>.safetensors.
COMPONENT_FILE = "component.yaml"
COMPONENT_CONFIGS = {"vae": "VAEConfig", "text_encoder": "TextEncoderConfig"}


def save_component(module: torch.nn.Module, kind: str, config, path: str | Path) -> Path:
    """Writes a component folder atomically (same staging and rename as save_model)."""
    if kind not in COMPONENT_CONFIGS:
        raise ModelError(f"unknown component kind {kind!r}; expected one of {', '.join(COMPONENT_CONFIGS)}")
    path = Path(path)
    with staged_folder(path, is_component_folder, "component folder") as staging:
        document = {"format_version": FORMAT_VERSION, "kind": kind, "config": to_dict(config)}
        (staging / COMPONENT_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
        target = getattr(module, "tower", module)
        write_safetensors(target.state_dict(), staging / WEIGHT_FILES[kind])
    return path


def is_component_folder(path: Path) -> bool:
    return (path / COMPONENT_FILE).is_file()


def load_component(path: str | Path, kind: str):
    """(module, config) of `kind` from a component folder or from a whole model folder."""
    path = recover_folder(path)
    if is_model_folder(path):
        if (path / "model_index.json").is_file():
            raise ModelError(f"{path} is a diffusers folder; use it as text2img.init_from instead")
        components = load_model(path)
        return components.modules()[kind], getattr(components.config, kind)
    if not is_component_folder(path):
        raise ModelError(f"{path} is neither a component folder ({COMPONENT_FILE}) nor a model folder")
    document = _read_document(path / COMPONENT_FILE)
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise ModelError(f"{path} holds a {document.get('kind') if isinstance(document, dict) else '?'}, not a {kind}")
    try:
        config = from_dict(getattr(config_module, COMPONENT_CONFIGS[kind]), document["config"], kind)
    except ConfigError as error:
        raise ModelError(f"{path / COMPONENT_FILE}: {error}") from None
    weights = path / WEIGHT_FILES[kind]
    with torch.device("meta"):  # sizes are checked against the file before anything is allocated
        if kind == "vae":
            module = build_vae(config)
        else:
            config.pretrained = None  # the trained tower is in the weights file
            module = build_text_encoder(config)
    target = getattr(module, "tower", module)
    check_fits(target, stored_shapes(weights), kind, COMPONENT_FILE, WEIGHT_FILES[kind])
    target.to_empty(device="cpu")
    load_state(target, read_safetensors(weights), kind)
    _restore_text_buffers(module)
    return module, config
