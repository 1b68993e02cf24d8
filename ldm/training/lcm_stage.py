"""Stage `lcm`: latent consistency distillation (Luo et al. 2023). A student U-Net, a copy of
the frozen teacher's with a guidance-scale embedding (zero-initialised: at step 0 it is the
teacher), learns to map any point of the teacher's guided ODE trajectory to the trajectory's
end: its output at t_n must match the EMA target network's output at t_n - k, where the
teacher's DDIM step (guidance scale drawn per sample) took the latents from t_n to t_n - k.
A flow-matching teacher is distilled along its flow ODE (ldm.training.flow_consistency: Euler
steps, f(x, s) = x - s v). Data as text2img (cached latents, captions; an SDXL teacher reads each
sample's size ids, and its unconditional side is zeros as sampling's); the export samples with
`--sampler lcm` (LCMScheduler, or FlowMatchLCMScheduler for a flow student)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ldm.config import ConfigError, SamplingDefaults
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.process import NoiseProcess, RectifiedFlow
from ldm.formats.model_folder import ModelError
from ldm.lora.adapters import add_lora_adapters, lora_tensors, set_adapters_enabled, write_lora_file
from ldm.lora.parameterisation import PREDICTION_KEY, prediction_type
from ldm.models.components import Components
from ldm.training import fsdp_state
from ldm.training.consistency import SkippingSolver, blend_into, pseudo_huber
from ldm.training.flow_consistency import FlowSkippingSolver
from ldm.training.size_conditioning import with_training_sizes
from ldm.training.text2img_stage import Text2ImgModule, Text2ImgStage
from ldm.training.validation import Grid, sample_grid

VALIDATION_STEPS = (1, 2, 4, 8)


def require_unet_teacher(teacher: nn.Module) -> None:
    """LCM students take a guidance-scale embedding, which only a U-Net has a place for."""
    backbone = backbone_of(teacher)
    if not backbone.takes_guidance_embedding:
        raise ConfigError(f"stage lcm distils a U-Net teacher (model.denoiser.kind: unet); this model's denoiser is a {backbone.title}")


def student_from_teacher(teacher: nn.Module, embedding_width: int) -> nn.Module:
    """The teacher's U-Net plus a guidance-scale embedding whose projection starts at zero,
    so that the student's output equals the teacher's until training moves it."""
    require_unet_teacher(teacher)
    student = type(teacher).from_config({**teacher.config, "time_cond_proj_dim": embedding_width})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise ModelError(f"lcm.init_from: the teacher's U-Net does not fit its own copy ({(unexpected or missing)[0]})")
    nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(next(teacher.parameters()).device)


def consistency_solver(process: NoiseProcess, section) -> SkippingSolver | FlowSkippingSolver:
    """The teacher's ODE step and the student's boundary form, for the teacher's parameterisation."""
    if isinstance(process, RectifiedFlow):
        return FlowSkippingSolver(process, section.skip)
    return SkippingSolver(process.alpha_bars, section.skip, process.prediction_type, section.timestep_scaling)


class LcmModule(Text2ImgModule):
    """The student is the trained submodule (`denoiser`); the teacher sits beside the frozen VAE
    and text encoder, out of DDP's and the checkpoints' way. The EMA target is a frozen registered
    submodule: FSDP shards it as it shards the student, block for block, so that it follows the
    student shard by shard (blend_into) and is gathered for its forward like any block. In the LoRA form
    (LCM-LoRA) the student is the teacher plus adapters: the teacher is the student with its
    adapters off, the target the student itself (no EMA), and no guidance embedding."""

    def __init__(self, components: Components, teacher, process: NoiseProcess, caption_dropout, section, lora: bool = False):
        super().__init__(components, process, caption_dropout, 0.0, None)
        self.lora = lora
        if not lora:
            self.teacher = (teacher.eval().requires_grad_(False),)
            self.target = copy.deepcopy(components.denoiser).eval().requires_grad_(False)
        self.solver = consistency_solver(process, section)
        self.section = section

    def student_call(self, network, latents, timesteps, cond: Conditioning, scale: torch.Tensor) -> torch.Tensor:
        """The student's (or the target network's) output at guidance scales `scale` (B,): its
        guidance embedding, one conditional pass (an LCM-LoRA has no embedding: the plain call)."""
        return GuidedModel(network, cond, None, scale)(latents, timesteps)

    @property
    def target_network(self) -> nn.Module:
        """The EMA target (in the LoRA form, the student itself)."""
        return self.denoiser if self.lora else self.target

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.lora:
            self.target.eval()  # the target network is never trained
        return self

    def teacher_call(self, latents, timesteps, cond: Conditioning, uncond: Conditioning, scale: torch.Tensor) -> torch.Tensor:
        """The teacher's output guided at scales `scale` (B,), one scale per sample. In the LoRA
        form the teacher is the student with its adapters off."""
        guided = GuidedModel(self.denoiser if self.lora else self.teacher[0], cond, uncond, scale)
        if not self.lora:
            return guided(latents, timesteps)
        set_adapters_enabled(self.denoiser, False)
        try:
            return guided(latents, timesteps)
        finally:
            set_adapters_enabled(self.denoiser, True)

    def boundary(self, output, noisy, timesteps):
        """The consistency function f(x, t): c_skip x + c_out x0(x, t), or x - s v for a flow student."""
        return self.solver.boundary(output, noisy, timesteps)

    @property
    def prediction_type(self) -> str:
        return self.process.prediction_type

    def teacher_step(self, noisy, start, previous, cond: Conditioning, uncond: Conditioning, scale: torch.Tensor):
        """The teacher's guided DDIM (flow: Euler) step from `start` to `previous` (no gradient).
        Guidance acts on the teacher's output: x0 and eps are affine in it, so guiding them is the same."""
        output = self.teacher_call(noisy, self.process.model_time(start), cond, uncond, scale)
        return self.solver.ode_step(output, noisy, start, previous)

    def unconditional(self, n: int) -> Conditioning:
        """The teacher's unconditional side as sampling builds it for an empty negative prompt:
        the encoding of "", or zeros where the text side says so (SDXL's force_zeros_for_empty_prompt)."""
        empty = self.encode([""] * n)
        return empty.map(torch.zeros_like) if getattr(self.conditioner, "zeros_for_empty_negative", False) else empty

    def forward(self, batch: dict, randomness, step: int):
        latents = self.latents(batch, randomness)
        cond = with_training_sizes(self.context(list(batch["caption"]), randomness), batch, latents, self.frozen[0], self.denoiser)
        uncond = with_training_sizes(self.unconditional(len(latents)), batch, latents, self.frozen[0], self.denoiser)
        b, device, section = len(latents), latents.device, self.section
        start = self.solver.timesteps[randomness.randint(len(self.solver.timesteps), (b,)).cpu()].to(device)  # t_n, (B,)
        previous = self.solver.previous(start)  # t_n - k, (B,)
        noisy = self.process.noised(latents, randomness.randn(latents.shape), start)
        scale = section.cfg_min + (section.cfg_max - section.cfg_min) * randomness.rand((b,)).to(device)  # (B,)
        # The student embeds `scale` as --cfg is embedded at sampling: GuidedModel does both.
        time = self.process.model_time  # what the denoiser reads (a flow model: 1000 s)
        prediction = self.boundary(self.student_call(self.denoiser, noisy, time(start), cond, scale), noisy, start)
        with torch.no_grad():
            earlier = self.teacher_step(noisy, start, previous, cond, uncond, scale)
            target_output = self.student_call(self.target_network, earlier, time(previous), cond, scale)
            target = self.boundary(target_output, earlier, previous)
        loss = pseudo_huber(prediction, target, section.huber_c)
        return loss, {"loss": loss.detach()}


class LcmStage(Text2ImgStage):
    @property
    def lora(self) -> bool:
        return self.config.lcm.lora_rank is not None

    def load_components(self) -> Components:
        section = self.config.lcm
        components = super().load_components()
        self.teacher = components.denoiser
        if self.lora:
            require_unet_teacher(self.teacher)
            return components  # adapters are added to the teacher's own U-Net (make_module)
        components.denoiser = student_from_teacher(self.teacher, section.guidance_embedding)
        if components.config is not None:
            components.config.denoiser.time_cond_proj_dim = section.guidance_embedding
            components.config.sampling = SamplingDefaults("lcm", section.sample_steps, section.sample_cfg)
            components.config.name = f"{components.config.name}-lcm"  # what PNG parameters' Model: says
        return components

    @property
    def lora_alpha(self) -> float:
        section = self.config.lcm
        return float(section.lora_alpha if section.lora_alpha is not None else section.lora_rank)

    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        section = self.config.lcm
        if self.lora:
            add_lora_adapters(components.denoiser, section.lora_rank, self.lora_alpha, "attention", self.config.train.seed)
        self.teacher.to(self.context.device)
        return LcmModule(components, self.teacher, process, self.config.data.caption_dropout, section, self.lora)

    def after_step(self) -> None:
        if not self.lora:
            blend_into(self.module.target, self.module.denoiser, self.config.lcm.target_ema_decay)  # under FSDP: shard to shard

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.lora:
            return {}
        # gather_tensor: whole tensors from FSDP's shards (a collective: every process calls this)
        return {f"target.{name}": fsdp_state.gather_tensor(p) for name, p in self.module.target.named_parameters()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.lora:
            return
        target = self.module.target
        weights = {name.removeprefix("target."): tensor for name, tensor in tensors.items()}
        if set(weights) != {name for name, _ in target.named_parameters()}:
            raise ModelError("the checkpoint holds no target network of this student (not an lcm run of this config)")
        with torch.no_grad():  # whole tensors into this process's shards (or into the whole parameters)
            for name, parameter in target.named_parameters():
                parameter.copy_(fsdp_state.shard_like(weights[name], parameter))

    def evaluate(self, step: int) -> dict:
        """A row per validation prompt: the student at 1, 2, 4 and 8 lcm steps (same seed)."""
        cfg = 1.0 if self.lora else self.config.validation.cfg  # LCM-LoRA: no guidance embedding; cfg 1 is one call per step
        options = dict(cfg=cfg, sampler="lcm", seed=self.config.validation.seed, progress=False)

        def row(pipeline, prompt: str, _) -> list:
            return [pipeline.generate(prompt, steps=n, **options).images[0] for n in VALIDATION_STEPS]

        return sample_grid(self.context, self.components, step, Grid(row, columns=len(VALIDATION_STEPS)))

    def export(self) -> Path:
        if not self.lora:
            return super().export()
        section = self.config.lcm
        tensors = lora_tensors(self.components.denoiser, "denoiser", "kohya", section.lora_rank, self.lora_alpha)
        metadata = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(section.lora_rank),
            "ss_network_alpha": f"{self.lora_alpha:g}",
            "ss_sd_model_name": str(section.init_from),
            "ldm_base_model": str(section.init_from),
            "ldm_sampling": "LCM-LoRA: --sampler lcm --steps 4 --cfg 1 (cfg > 1 adds an unconditional pass)",
            PREDICTION_KEY: prediction_type(self.components.scheduler_config),  # a flow LCM-LoRA is refused on eps/v models
        }
        return write_lora_file(tensors, self.context.output_dir / "lcm-lora.safetensors", metadata)
