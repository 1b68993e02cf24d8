"""An SD3 model (read from a diffusers folder or a single file) as one file in Stability's
original layout (ldm.formats.sd3_single_file reads it back).

A file is only written when it reads back as the same model: what its keys cannot say (heads,
activations, the VAE's norm groups and factors, the scheduler's shift, CLIP's tokenizers) must
be the `sd3` facts a reader assumes, and CLIP-L's projection the identity readers give it."""

from __future__ import annotations

import torch

from ldm.formats.diffusers_sd3 import JointContext
from ldm.formats.mmdit_layout import mmdit_to_original
from ldm.formats.original_layout import vae_to_original
from ldm.formats.original_shapes import bare_clip_names, layout_facts
from ldm.formats.sd3_single_file import CLIP_G, CLIP_L, T5, mmdit_config, vae_config
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.components import Components
from ldm.models.weights import ModelError

PROJECTION = "text_projection.weight"


def is_sd3_model(components: Components) -> bool:
    """SD3's text side (two CLIPs, maybe T5, joined as SD3 joins them) before an MMDiT."""
    return isinstance(components.conditioner.combine, JointContext)


def sd3_original_state(components: Components) -> dict[str, torch.Tensor]:
    """An SD3 model's weights under Stability's names; ModelError where a reader would not get this model back."""
    clips, t5 = components.text_encoders[:2], components.text_encoders[2:]
    first, second = (bare_clip_names(encoder.model.state_dict()) for encoder in clips)
    projection = first.pop(PROJECTION, None)
    if projection is not None and not torch.equal(projection, torch.eye(len(projection), dtype=projection.dtype, device=projection.device)):
        raise ModelError("the original SD3 layout reads CLIP-L's pooled output unprojected; this model's text_encoder projects it")
    state = mmdit_to_original(components.denoiser.state_dict(), components.denoiser.config.num_layers)
    state.update(vae_to_original(components.vae.state_dict(), components.vae.config))
    state.update({f"{CLIP_L}text_model.{k}": v for k, v in first.items()})
    state[CLIP_G + PROJECTION] = second.pop(PROJECTION)
    state.update({f"{CLIP_G}text_model.{k}": v for k, v in second.items()})
    if t5:
        state.update({T5 + k: v for k, v in t5[0].model.state_dict().items()})  # the tied embedding too: diffusers reads it
    _check_reads_back(components, state)
    return state


def _check_reads_back(components: Components, state: dict[str, torch.Tensor]) -> None:
    facts = layout_facts()["sd3"]
    read = {
        "transformer": (components.denoiser.config, mmdit_config(state, facts)),
        "vae": (components.vae.config, vae_config(state, facts)),
        "scheduler": (components.scheduler_config, facts["scheduler"]),
    }
    for index, encoder in enumerate(components.text_encoders[:2]):
        config = encoder.model.config
        expected = {"hidden_act": facts["text_activations"][index], "num_attention_heads": config.hidden_size // facts["text_head_width"]}
        tokenizer = clip_tokenizer(pad_token="!") if index else clip_tokenizer()
        ours = {**{k: getattr(config, k) for k in expected}, "tokenizer": (len(encoder.tokenizer), encoder.tokenizer.pad_token)}
        read[f"text_encoder{'_2' if index else ''}"] = (ours, {**expected, "tokenizer": (len(tokenizer), tokenizer.pad_token)})
    for part, (ours, theirs) in read.items():
        for key, value in theirs.items():
            have = ours.get(key) if isinstance(ours, dict) else getattr(ours, key, None)
            if _differs(have, value):
                raise ModelError(f"an SD3 single file cannot hold this model: its {part} {key} is {have!r}, which a reader of the file takes as {value!r}")


def _differs(have, value) -> bool:
    if isinstance(value, (tuple, list)):
        return tuple(have or ()) != tuple(value)
    if isinstance(value, float) and isinstance(have, (int, float)):
        return abs(have - value) > 1e-9
    return have != value
