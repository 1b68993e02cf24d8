"""ldm-train: train a stage (autoencoder, clip, text2img, inpaint) from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli.common import UsageError, fail
from ldm.files import create_exclusive, temporary_name

PROG = "ldm-train"

EXAMPLES = """examples:
  ldm-train --config configs/cpu/text2img.yaml
  ldm-train --config configs/text2img.yaml data.path='shards/{00000..00099}.tar' train.output_dir=runs/sd
  ldm-train --config configs/text2img.yaml --resume latest
  ldm-train --config configs/cpu/inpaint.yaml inpaint.init_from=runs/cpu-text2img/model
  accelerate launch --num_processes 8 -m ldm.cli.train --config configs/text2img.yaml

Overrides use the config's dotted keys (values are YAML): train.lr=5e-5 train.max_steps=2000.
The stage's product goes to OUTPUT/model (text2img, inpaint), OUTPUT/vae (autoencoder) or
OUTPUT/text_encoder (clip); checkpoints to OUTPUT/checkpoints, logs to OUTPUT/log.jsonl and
OUTPUT/logs (TensorBoard), validation grids to OUTPUT/samples."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a latent diffusion stage: the autoencoder, a CLIP text encoder, or the text-to-image U-Net.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="training config (YAML); its `stage` picks what is trained")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.lr=1e-4")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from OUTPUT/checkpoints/latest, a checkpoint folder, or a run's output folder",
    )
    return parser


def check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(path / "write-test")
        create_exclusive(probe)
        probe.unlink()
    except OSError as error:
        raise UsageError(f"output directory {path} cannot be written: {error.strerror or error}") from None


def check_model_paths(config) -> None:
    for key in ("init_from", "vae_from", "text_encoder_from"):
        value = getattr(config.text2img, key)
        if config.stage == "text2img" and value and not Path(value).is_dir():
            raise UsageError(f"text2img.{key}: {value} is not a folder")
    if config.stage == "inpaint" and not Path(config.inpaint.init_from).is_dir():
        raise UsageError(f"inpaint.init_from: {config.inpaint.init_from} is not a folder")


def preflight(args):
    """Every check that can fail on bad input, before any training work starts."""
    from ldm.config import ConfigError
    from ldm.training.config import load_train_config

    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    check_model_paths(config)
    output_dir = Path(config.train.output_dir)
    check_output_dir(output_dir)
    from ldm.training.checkpoints import clean_run_leftovers

    # Before resolving `latest`: a checkpoint a kill left aside is put back first.
    clean_run_leftovers(output_dir)
    resume = None
    if args.resume:
        from ldm.training.checkpoints import CheckpointError, resolve_checkpoint

        try:
            resume = resolve_checkpoint(args.resume, output_dir)
        except CheckpointError as error:
            raise UsageError(str(error)) from None
    return config, resume


def input_errors() -> tuple[type, ...]:
    """Exceptions that mean bad input (exit 2) rather than a failed run."""
    from ldm.model_folder import ModelError
    from ldm.config import ConfigError
    from ldm.training.checkpoints import CheckpointError

    errors: tuple[type, ...] = (ConfigError, ModelError, CheckpointError)
    try:
        from ldm.data import DataError

        errors += (DataError,)
    except ImportError:
        pass
    return errors


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, resume = preflight(args)
    except UsageError as error:
        fail(PROG, str(error))
    from ldm.training.loop import TrainingError, train

    bad_input = input_errors()
    try:
        result = train(config, resume=resume)
    except bad_input as error:
        fail(PROG, str(error).splitlines()[0] if str(error) else type(error).__name__)
    except ImportError as error:
        fail(PROG, f"missing module: {error}")
    except TrainingError as error:
        fail(PROG, str(error), status=1)
    except KeyboardInterrupt:
        fail(PROG, "interrupted; resume with --resume latest", status=130)
    print(f"trained {result.step} steps ({result.skipped_steps} skipped); wrote {result.export_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
