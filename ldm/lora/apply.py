"""LoRA files: read both key layouts, apply at a weight as low-rank deltas, unload exactly.

Layouts (one file may hold U-Net and text-encoder parts, and learned token embeddings:
ldm.lora.token_embeddings):
  kohya / AUTOMATIC1111 / ComfyUI   lora_unet_<module_with_underscores>.lora_down.weight,
                                    .lora_up.weight, .alpha      (lora_te_... for the text encoder;
                                    SDXL: lora_te1_, lora_te2_, and the U-Net's original block names;
                                    SD3: the original MMDiT's names, lora_te3_ for T5: ldm.lora.mmdit_names)
  diffusers / peft                  unet.<module>.lora_A.weight, .lora_B.weight (transformer.<...>
                                    for an MMDiT (SD3); text_encoder.<...>,
                                    text_encoder_2.<...>); alpha from the header's adapter metadata
                                    (ldm.lora.metadata)
How names become modules: ldm.lora.module_names; a file for another family: ldm.lora.families;
a flow LoRA on an eps/v model: ldm.lora.parameterisation.

A delta W += weight * alpha / rank * (up @ down) is added to the module's weight in place;
the originals are kept so that unloading restores them bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.formats.model_folder import ModelError, read_safetensors
from ldm.formats.single_file import read_metadata
from ldm.lora.families import family_mismatch
from ldm.lora.metadata import AdapterMetadataError, adapter_configs, effective_alpha
from ldm.lora.mmdit_names import Piece, mmdit_kohya_index
from ldm.lora.module_names import kohya_index, lora_target, peft_module
from ldm.lora.parameterisation import parameterisation_mismatch
from ldm.lora.refs import check_weight, file_hash
from ldm.lora.token_embeddings import BUNDLE_PREFIX, bundled_vectors, single_token
from ldm.models.components import Components

KOHYA_PARTS = {
    "lora_unet_": "denoiser", "lora_te_": "text_encoder", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",  # SD3's T5
}  # fmt: skip
PEFT_PARTS = {"unet.": "denoiser", "transformer.": "denoiser", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2"}


class LoraError(ModelError):
    """A LoRA file that cannot be used with this model; the message names the mismatch."""


@dataclass
class LoraDelta:
    part: str  # "denoiser", "text_encoder" or "text_encoder_2": the Components part (Components.modules()) it changes
    module: str  # the module's name as in named_modules()
    up: torch.Tensor  # (out, rank[, 1, 1])
    down: torch.Tensor  # (rank, in[, kh, kw])
    alpha: float

    def delta(self, shape: torch.Size) -> torch.Tensor:
        rank = self.down.shape[0]
        product = self.up.flatten(1).double() @ self.down.flatten(1).double()  # (out, in * kh * kw)
        return (product * (self.alpha / rank)).reshape(shape)


@dataclass
class Lora:
    name: str
    path: Path
    deltas: list[LoraDelta]
    metadata: dict = field(default_factory=dict)
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # token id -> its learned embedding row

    @property
    def short_hash(self) -> str:
        return file_hash(self.path)


def read_lora(path: str | Path, components: Components) -> Lora:
    """Reads a LoRA file and matches every part of it to a module of `components`."""
    path = Path(path)
    backbone = backbone_of(components.denoiser)
    if not backbone.supports_lora:
        raise LoraError(f"{path}: LoRAs apply to U-Net and MMDiT models; this model's denoiser is {backbone.described}")
    state = read_safetensors(path)
    _check_finite(state, path)
    metadata = read_metadata(path)
    tokens = _token_rows(bundled_vectors(state), components, path)
    state = {key: tensor for key, tensor in state.items() if not key.startswith(BUNDLE_PREFIX)}
    mismatch = family_mismatch(state, components) or parameterisation_mismatch(state, metadata, components.scheduler_config)
    if mismatch is not None:
        raise LoraError(f"{path}: {mismatch}")
    if any(k.startswith("lora_") for k in state):
        deltas = _kohya_deltas(state, components, path)
    else:
        try:
            deltas = _peft_deltas(state, adapter_configs(metadata), components, path)
        except AdapterMetadataError as error:
            raise LoraError(f"{path}: {error}") from None
    if not deltas and not tokens:
        raise LoraError(f"{path} holds no LoRA weights (no lora_unet_*/lora_te_* or unet.*/transformer.*.lora_A keys)")
    for item in deltas:
        _check_fits(item, components, path)
    return Lora(name=path.stem, path=path, deltas=deltas, metadata=metadata, tokens=tokens)


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """A NaN or infinity in a LoRA spreads through every weight it touches: refused on reading."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise LoraError(f"{path}: {key!r} holds NaN or infinite values; the LoRA file is damaged")


def _token_rows(vectors: dict[str, torch.Tensor], components: Components, path: Path) -> dict[int, torch.Tensor]:
    """Bundled embeddings as rows of the text encoder's embedding table (one-token words only)."""
    rows, width = {}, components.first_text_encoder.token_embedding.weight.shape[1]
    for word, vectors_of_word in vectors.items():
        if vectors_of_word.shape != (1, width):
            raise LoraError(f"{path}: embedding {word!r} is {tuple(vectors_of_word.shape)}; this model takes one vector of width {width}")
        try:
            rows[single_token(components.first_text_encoder, word)] = vectors_of_word[0]
        except ValueError as error:
            raise LoraError(f"{path}: embedding {error}") from None
    return rows


def _kohya_deltas(state, components, path) -> list[LoraDelta]:
    deltas, indices = [], {}
    for key in state:
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key.removesuffix(".lora_down.weight")
        prefix = next((p for p in KOHYA_PARTS if stem.startswith(p)), None)
        if prefix is None:
            raise LoraError(f"{path}: unknown LoRA key {key!r} (expected lora_unet_*, lora_te_*, lora_te1_*, lora_te2_* or lora_te3_*)")
        part = KOHYA_PARTS[prefix]
        if part not in components.modules():
            raise LoraError(f"{path}: LoRA module {stem!r} changes {part}, which this model does not have")
        if part not in indices:
            indices[part] = _kohya_pieces(components, part)
        pieces = indices[part].get(stem[len(prefix) :])
        if pieces is None:
            raise LoraError(f"{path}: LoRA module {stem!r} is not in this model's {part}")
        alpha = state.get(stem + ".alpha")
        down = state[key]
        up = _required(state, stem + ".lora_up.weight", path)
        alpha = float(alpha) if alpha is not None else float(down.shape[0])
        deltas += [LoraDelta(part, piece.module, piece.up(up), down, alpha) for piece in pieces]
    return deltas


def _kohya_pieces(components: Components, part: str) -> dict[str, tuple[Piece, ...]]:
    """kohya's underscored names for `part` -> the modules (and their shares) each adapts."""
    if part == "denoiser" and backbone_of(components.denoiser).kind == "mmdit":
        return mmdit_kohya_index(lora_target(components, part))
    return {stem: (Piece(name),) for stem, name in kohya_index(components, part).items()}


def _peft_deltas(state, configs: dict[str, dict], components, path) -> list[LoraDelta]:
    """Alpha: the file's `.alpha` tensor, else diffusers' adapter metadata (`configs`), else the rank."""
    deltas = []
    for key in state:
        if not key.endswith(".lora_A.weight"):
            continue
        stem = key.removesuffix(".lora_A.weight")
        prefix = next((p for p in PEFT_PARTS if stem.startswith(p)), None)
        if prefix is None:
            raise LoraError(f"{path}: unknown LoRA key {key!r} (expected unet.*, transformer.*, text_encoder.* or text_encoder_2.*)")
        part = PEFT_PARTS[prefix]
        name = peft_module(components, part, stem[len(prefix) :])
        if name is None:
            raise LoraError(f"{path}: LoRA module {stem!r} is not in this model's {part}")
        down, up = state[key], _required(state, stem + ".lora_B.weight", path)
        alpha = state.get(stem + ".alpha")
        if alpha is None:
            alpha = effective_alpha(configs.get(prefix.rstrip("."), {}), stem[len(prefix) :], down.shape[0])
        deltas.append(LoraDelta(part, name, up, down, float(alpha) if alpha is not None else float(down.shape[0])))
    return deltas


def _required(state, key, path) -> torch.Tensor:
    if key not in state:
        raise LoraError(f"{path}: {key!r} is missing")
    return state[key]


def _check_fits(item: LoraDelta, components: Components, path: Path) -> None:
    weight = dict(lora_target(components, item.part).named_modules())[item.module].weight
    out_features, in_features = item.up.shape[0], item.down.flatten(1).shape[1]
    if (out_features, in_features) != (weight.shape[0], weight[0].numel()) or item.up.shape[1] != item.down.shape[0]:
        raise LoraError(
            f"{path}: LoRA for {item.part} {item.module} is {out_features}x{in_features} (rank {item.down.shape[0]}), "
            f"the model's weight is {tuple(weight.shape)}"
        )


class AppliedLoras:
    """LoRAs added into a model's weights; `unload()` puts the originals back exactly."""

    def __init__(self, components: Components):
        self.components = components
        self.originals: dict[tuple[str, str], torch.Tensor] = {}
        self.original_rows: dict[int, torch.Tensor] = {}
        self.applied: list[tuple[Lora, float]] = []

    def changed_parts(self) -> set[str]:
        """The Components parts (Components.modules() names) whose weights the LoRAs changed."""
        parts = {part for part, _ in self.originals}
        return parts | ({"text_encoder"} if self.original_rows else set())  # learned tokens: the first encoder's table

    @torch.no_grad()
    def apply(self, lora: Lora, weight: float = 1.0) -> None:
        """Adds `lora` at `weight`; LoraError (naming the file) when the weight is out of range or
        a merged weight would not be finite in the model's dtype (that module is left unchanged)."""
        try:
            check_weight(weight, f"LoRA {lora.path}")
        except ValueError as error:
            raise LoraError(str(error)) from None
        self.applied.append((lora, weight))
        if weight == 0:
            return  # the base model, exactly
        for item in lora.deltas:
            module = dict(lora_target(self.components, item.part).named_modules())[item.module]
            key = (item.part, item.module)
            summed = module.weight.double() + weight * item.delta(module.weight.shape).to(module.weight.device)
            merged = summed.to(module.weight.dtype)
            if not torch.isfinite(merged).all():
                raise LoraError(
                    f"LoRA {lora.path} at weight {weight:g} makes {item.part} {item.module} overflow "
                    f"{str(module.weight.dtype).removeprefix('torch.')}: its weights are too large for this model"
                )
            if key not in self.originals:
                self.originals[key] = module.weight.detach().clone()
            module.weight.copy_(merged)
        # A learned embedding is used whole at any non-zero weight, as AUTOMATIC1111 does.
        table = self.components.first_text_encoder.token_embedding.weight
        for token, row in lora.tokens.items():
            self.original_rows.setdefault(token, table[token].detach().clone())
            table[token] = row.to(table.device, table.dtype)

    @torch.no_grad()
    def unload(self) -> None:
        for (part, name), original in self.originals.items():
            dict(lora_target(self.components, part).named_modules())[name].weight.copy_(original)
        table = self.components.first_text_encoder.token_embedding.weight
        for token, row in self.original_rows.items():
            table[token] = row
        self.originals.clear()
        self.original_rows.clear()
        self.applied.clear()


def apply_loras(components: Components, loras: list[tuple[str | Path, float]]) -> AppliedLoras:
    """Reads every file first (a bad one changes nothing), then applies them in order."""
    read = [(read_lora(path, components), weight) for path, weight in loras]
    applied = AppliedLoras(components)
    try:
        for lora, weight in read:
            applied.apply(lora, weight)
    except BaseException:
        applied.unload()  # one that cannot be applied leaves the model as it was
        raise
    return applied

