"""Training stages by name: the one place that imports every stage module.

Kept apart from ldm.training.stages (the base class the stage modules import) so that the
registry can import the stages at the top without a cycle. The names users may write in a
config are ldm.training.config.STAGE_NAMES; a test keeps the two in step.
"""

from __future__ import annotations

from ldm.training.autoencoder_stage import AutoencoderStage
from ldm.training.clip_stage import ClipStage
from ldm.training.controlnet_stage import ControlNetStage
from ldm.training.inpaint_stage import InpaintStage
from ldm.training.lcm_stage import LcmStage
from ldm.training.lora_stage import LoraStage
from ldm.training.stages import Stage, StageContext
from ldm.training.text2img_stage import Text2ImgStage
from ldm.training.upscaler_stage import UpscalerStage

STAGES: dict[str, type[Stage]] = {
    "autoencoder": AutoencoderStage,
    "clip": ClipStage,
    "text2img": Text2ImgStage,
    "inpaint": InpaintStage,
    "controlnet": ControlNetStage,
    "lcm": LcmStage,
    "lora": LoraStage,
    "upscaler": UpscalerStage,
}


def build_stage(context: StageContext) -> Stage:
    return STAGES[context.config.stage](context)
