"""Run by test_multiprocess.py and test_fsdp.py under `accelerate launch`: a few text2img steps on
tiny images read by ldm.data, as ldm-train reads them: from a folder, or from webdataset shards
(IMAGES a brace pattern of .tar files: a shuffle buffer of 3).
usage: ddp_run.py OUTPUT_DIR PER_PROCESS_BATCH STEPS IMAGES BACKBONE [SAVE_EVERY [RESUME_CHECKPOINT]]
(SAVE_EVERY 0 or left out: every 2 steps from shards, else only at the end)
DDP_RUN_BUCKETS=1 in the environment: data.buckets on (test_bucket_training.py)."""

import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from configs import tiny_train_config  # noqa: E402

from ldm.training.loop import train  # noqa: E402

output_dir, batch, steps, images, backbone = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
shards = images.endswith(".tar")
save_every = int(sys.argv[6]) if len(sys.argv) > 6 and int(sys.argv[6]) > 0 else (2 if shards else 1000)
resume = Path(sys.argv[7]) if len(sys.argv) > 7 else None
config = tiny_train_config("text2img", output_dir, backbone, max_steps=steps, batch_size=batch, save_every=save_every, ema_decay=0.9)
config.data.path = images
config.data.buckets = os.environ.get("DDP_RUN_BUCKETS") == "1"
if shards:
    config.data.source, config.data.shuffle_buffer = "webdataset", 3
train(config, resume=resume)
