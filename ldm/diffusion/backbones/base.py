"""The adapter every denoiser family is driven through: how it is built and called, and what
it offers (ControlNet, LoRA, patches, an input convolution to widen, buffers to rebuild)."""

from __future__ import annotations

from typing import Callable, ClassVar, Optional, Union

import torch
from torch import nn

from ldm.diffusion.conditioning import Conditioning

# ControlNet residuals: a U-Net adds (down residuals, mid residual) to its skip connections;
# an MMDiT adds a list of block samples to its joint blocks' outputs.
Residuals = Union[tuple[list[torch.Tensor], torch.Tensor], list[torch.Tensor]]
# What computes residuals for a call from its (model input, timestep, conditioning).
Steering = Callable[[torch.Tensor, torch.Tensor, Conditioning], Optional[Residuals]]


class Backbone:
    """One denoiser module (maybe wrapped by torch.compile) as the project uses it.

    Subclasses state their facts as class attributes and implement `build` and `forward`;
    `ldm.diffusion.backbones.registry` finds the adapter for a module or a config section."""

    kind: ClassVar[str]  # model.denoiser.kind in configs
    title: ClassVar[str]  # what messages call it
    diffusers_class: ClassVar[str]  # the diffusers class it drives (matched by name: no diffusers import)
    diffusers_folder: ClassVar[str]  # its subfolder in a diffusers pipeline folder
    config_section: ClassVar[type]  # its section class of ModelConfig (ldm.config)
    configurable: ClassVar[bool] = True  # built from a config section (False: loaded from diffusers folders only)
    supports_controlnet: ClassVar[bool] = False
    supports_lora: ClassVar[bool] = False
    takes_guidance_embedding: ClassVar[bool] = False  # can be guidance-distilled (an LCM student)

    def __init__(self, module: nn.Module, steering: Optional[Steering] = None):
        self.module = module  # what is called: the compiled wrapper when there is one
        self.steering = steering

    @staticmethod
    def build(section, text_width: int) -> nn.Module:
        """A fresh module from the backbone's config section; `text_width` is the text encoder's."""
        raise NotImplementedError

    @classmethod
    def load_pretrained(cls, folder, **options) -> nn.Module:
        """The module diffusers saved in `folder` (from_pretrained's `options`)."""
        import diffusers

        return getattr(diffusers, cls.diffusers_class).from_pretrained(folder, **options)

    @property
    def inner(self) -> nn.Module:
        """The module itself (torch.compile's wrapper keeps it as `_orig_mod`)."""
        return getattr(self.module, "_orig_mod", self.module)

    @property
    def config(self):
        return self.inner.config  # the diffusers config

    def steered_by(self, steering: Steering) -> "Backbone":
        """The same module called with residuals from `steering` (ControlNets) at every call."""
        return type(self)(self.module, steering)

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                 residuals: Optional[Residuals] = None) -> torch.Tensor:  # fmt: skip
        """The prediction (eps or v, per the schedule) for `latents` (B, C, h, w) at `timestep`
        (a scalar or (B,)) under `cond`: (B, C, h, w). The conditioning's concatenated channels
        (a 9-channel inpainting model's) are put beside the latents first."""
        if cond.concat is not None:
            latents = torch.cat([latents, cond.concat], dim=1)  # (B, C + C', h, w)
        if residuals is None and self.steering is not None:
            residuals = self.steering(latents, timestep, cond)
        if residuals is not None and not self.supports_controlnet:
            raise TypeError(f"{self.described} takes no ControlNet residuals")
        return self.forward(latents, timestep, cond, residuals)

    @property
    def described(self) -> str:
        """The title with its article, as messages say it ("a DiT")."""
        return f"a {self.title}"

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                residuals: Optional[Residuals]) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError

    @property
    def patch_size(self) -> int:
        """Latent cells per side of one input token: sizes must be multiples of it."""
        return 1

    @property
    def learned_sigma(self) -> bool:
        """Whether the output carries a learned variance beside the prediction."""
        return False

    @property
    def guidance_embedding_width(self) -> Optional[int]:
        """The width of the guidance-scale embedding a guidance-distilled model takes; None
        for a denoiser that is guided the classic way."""
        return None

    def attention_layers(self, cells: int) -> list[tuple[int, int]]:
        """(tokens, channels) of every self-attention layer in one pass over `cells` latent
        cells: what the step-time rule (ldm.pipeline.step_time) costs."""
        raise NotImplementedError

    def input_conv(self) -> tuple[nn.Module, str]:
        """(module, attribute) of the first convolution, the one that sees the input channels
        (widened for inpainting)."""
        raise NotImplementedError

    def restore_buffers(self) -> None:
        """Rebuilds the non-persistent buffers a weights file lacks (garbage after a build on
        the meta device); none by default."""
