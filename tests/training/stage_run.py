"""Run by test_fsdp_stages.py under `accelerate launch` (DDP, or FSDP through fsdp_run.py): a few
steps of a stage that trains a part beside a frozen model (lora, controlnet), or a student
beside its teacher and EMA target network (lcm), on tiny images.
usage: stage_run.py OUTPUT_DIR STAGE INIT_FROM IMAGES [RESUME_CHECKPOINT]
(2 images per process and step, 3 steps, a checkpoint at step 2 and at the end, EMA 0.9)"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from configs import tiny_train_dict  # noqa: E402

from ldm.config import from_dict  # noqa: E402
from ldm.training.config import TrainConfig  # noqa: E402
from ldm.training.loop import train  # noqa: E402

SECTIONS = {
    "lora": {"rank": 2, "alpha": 4.0, "text_encoder": True},  # adapters on the U-Net and on the text encoder
    "controlnet": {"control_type": "raw"},
    "lcm": {"guidance_embedding": 32, "target_ema_decay": 0.5},  # a target that moves visibly in 3 steps
}

output_dir, stage, init_from, images = sys.argv[1:5]
resume = Path(sys.argv[5]) if len(sys.argv) > 5 else None
data = tiny_train_dict(stage, output_dir, max_steps=3, batch_size=2, save_every=2, ema_decay=0.9)
data[stage] = {"init_from": init_from, **SECTIONS[stage]}
data["data"]["path"] = images
train(from_dict(TrainConfig, data), resume=resume)
