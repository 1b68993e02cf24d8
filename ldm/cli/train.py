"""ldm-train: train a stage (autoencoder, clip, text2img, inpaint) from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.bundled_configs import list_configs, resolve_config_path
from ldm.builtin_models import UnknownModelError
from ldm.cli.common import UsageError, check_output_dir, fail
from ldm.cli.train_paths import check_config_paths
from ldm.config import ConfigError, apply_overrides, read_yaml
from ldm.training.parent_watch import stop_with_launcher
from ldm.training.shard_plan import SHARD_CHOICES, planned_sharding

PROG = "ldm-train"

EXAMPLES = """examples:
  ldm-train --list-configs
  ldm-train --config cpu/text2img.yaml data.path=my_pictures/
  ldm-train --config text2img.yaml --dry-run
  ldm-train --config text2img.yaml --dry-run --num-processes 8 --shard fsdp
  ldm-train --config text2img.yaml data.path='shards/{00000..00099}.tar' train.output_dir=runs/sd
  ldm-train --config text2img.yaml --resume latest
  ldm-train --config cpu/inpaint.yaml inpaint.init_from=runs/cpu-text2img/model
  ldm-train --config my_config.yaml
  accelerate launch --num_processes 8 -m ldm.cli.train --config text2img.yaml

--config takes a file, else the name of a bundled config (--list-configs); a file wins.

Overrides use the config's dotted keys (values are YAML): train.lr=5e-5 train.max_steps=2000.
The stage's product goes to OUTPUT/model (text2img, inpaint), OUTPUT/vae (autoencoder) or
OUTPUT/text_encoder (clip); checkpoints to OUTPUT/checkpoints, logs to OUTPUT/log.jsonl and
OUTPUT/logs (TensorBoard), validation grids to OUTPUT/samples."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train a latent diffusion stage: the autoencoder, a CLIP text encoder, the text-to-image denoiser\n(U-Net, DiT or MMDiT), "
            "its inpainting variant, a ControlNet, an LCM (few-step) student or a LoRA."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE|NAME",
        help="training config (YAML file, or a bundled config's name such as cpu/text2img.yaml); its `stage` picks what is trained",
    )
    parser.add_argument("--list-configs", action="store_true", help="list the bundled configs with their purpose, and exit")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model on the meta device and print its size, memory per GPU, FLOPs and data; train nothing, write nothing",
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help="with --dry-run: plan for N processes (GPUs); default: WORLD_SIZE, else accelerate's config, else 1",
    )
    parser.add_argument(
        "--shard",
        choices=SHARD_CHOICES,
        help=(
            "with --dry-run: plan per-GPU memory for this sharding (fsdp: FULL_SHARD; fsdp-grad-op: SHARD_GRAD_OP; "
            "zero1/2/3: DeepSpeed ZeRO stages); default: accelerate's config (distributed_type FSDP / DEEPSPEED), else none"
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.lr=1e-4")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from OUTPUT/checkpoints/latest, a checkpoint folder, or a run's output folder",
    )
    return parser


def preflight(args):
    """Every check that can fail on bad input, before any training work starts: the config,
    its paths, the output folder and its lock (held from here: release it when the run ends),
    the checkpoint to resume. Returns (config, resume, lock); the dry run gets (config, None, None)."""
    try:
        path = resolve_config_path(args.config)
        if not args.dry_run:  # the dry run reports missing folders itself and writes nothing
            check_config_paths(apply_overrides(read_yaml(path), list(args.overrides)))
        # Project modules that pull in torch are imported after the cheap checks: --help stays instant.
        from ldm.training.config import load_train_config

        config = load_train_config(path, args.overrides)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if args.dry_run:
        return config, None, None
    from ldm.training.config import random_text_encoder

    reason = random_text_encoder(config)
    if reason:
        raise UsageError(reason)
    output_dir = Path(config.train.output_dir)
    check_output_dir(output_dir)
    from ldm.training.checkpoints import clean_run_leftovers
    from ldm.training.run_lock import RunLockError, lock_output_dir

    try:  # before touching the folder: a live run's checkpoints are its own
        lock = lock_output_dir(output_dir)
    except RunLockError as error:
        raise UsageError(str(error)) from None
    try:
        # Before resolving `latest`: a checkpoint a kill left aside is put back first.
        clean_run_leftovers(output_dir)
        return config, resume_from(args.resume, output_dir), lock
    except BaseException:
        lock.release()
        raise


def resume_from(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint --resume names (None without --resume)."""
    if not resume:
        return None
    from ldm.training.checkpoints import CheckpointError, resolve_checkpoint

    try:
        return resolve_checkpoint(resume, output_dir)
    except CheckpointError as error:
        raise UsageError(str(error)) from None


def input_errors() -> tuple[type, ...]:
    """Exceptions that mean bad input (exit 2) rather than a failed run."""
    from ldm.formats.model_folder import ModelError
    from ldm.training.checkpoints import CheckpointError

    errors: tuple[type, ...] = (ConfigError, ModelError, CheckpointError, UnknownModelError)
    try:
        from ldm.data import DataError

        errors += (DataError,)
    except ImportError:
        pass
    return errors


def training_summary(result) -> str:
    """'trained 200 steps; data: 1200 images, 5 converted (5 CMYK->RGB), 3 skipped (2 unreadable,
    1 too small)', naming the steps skipped for a non-finite loss or gradient when there are some,
    and the step a resumed run started from ('trained steps 101-200 (resumed from step 100)')."""
    from ldm.training.reporting import data_summary

    if not result.start_step:
        steps = f"trained {result.step} steps"
    elif result.step > result.start_step:
        steps = f"trained steps {result.start_step + 1}-{result.step} (resumed from step {result.start_step})"
    else:
        steps = f"trained no step (resumed at step {result.start_step}: train.max_steps reached)"
    if result.skipped_steps:
        steps += f" ({result.skipped_steps} not applied: non-finite loss or gradient)"
    if result.scaler_skipped_steps:
        steps += f" ({result.scaler_skipped_steps} skipped by the fp16 loss scaler)"
    return f"{steps}; data: {data_summary(result.data, result.cached_samples)}"


def run_training(config, resume):
    """train(), its failures told in one line."""
    from ldm.training.loop import TrainingError, train

    bad_input = input_errors()
    try:
        return train(config, resume=resume)
    except bad_input as error:
        fail(PROG, str(error).splitlines()[0] if str(error) else type(error).__name__)
    except ImportError as error:
        fail(PROG, f"missing module: {error}")
    except TrainingError as error:
        fail(PROG, str(error), status=1)
    except KeyboardInterrupt:
        fail(PROG, "interrupted; resume with --resume latest", status=130)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_configs:
        print(list_configs())
        return 0
    if not args.config:
        parser.error("--config is required (ldm-train --list-configs shows the bundled ones)")
    if args.num_processes is not None and (not args.dry_run or args.num_processes < 1):
        parser.error("--num-processes takes a positive count and goes with --dry-run (a run's processes are accelerate launch's)")
    if args.shard is not None and not args.dry_run:
        parser.error("--shard goes with --dry-run (a run's sharding is accelerate's config: accelerate config, or accelerate launch --config_file)")
    stop_with_launcher()
    try:
        config, resume, lock = preflight(args)
    except UsageError as error:
        fail(PROG, str(error))
    if args.dry_run:
        from ldm.training.dry_run import dry_run_report
        from ldm.training.process_count import planned_processes

        try:
            processes = planned_processes(args.num_processes)
            print(dry_run_report(config, processes, planned_sharding(args.shard, processes.count)))
        except input_errors() as error:
            fail(PROG, str(error).splitlines()[0])
        return 0
    try:
        result = run_training(config, resume)
    finally:
        lock.release()
    print(f"{training_summary(result)}; wrote {result.export_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
