"""What every ldm command shares: device/dtype choice, the model argument, error exits,
and crash-safe PNG writing (ldm.files) under names that never overwrite an image the user
did not name. Nothing heavy is imported at module level, so `--help` is instant."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import NoReturn

from ldm.builtin_models import DEFAULT_MODEL, UnknownModelError, list_models, resolve_model
from ldm.timing import Stopwatch
from ldm.errors import LdmError
from ldm.files import clean_leftovers, create_exclusive, publish_new_file, temporary_name, writing_file

DTYPES = ("auto", "fp32", "fp16", "bf16")


class ListModels(argparse.Action):
    """--list-models answers and exits before the other arguments (a prompt) are required."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(list_models())
        parser.exit(0)


class UsageError(LdmError):
    """Bad input from the user: printed as one line, exit status 2."""


def report_error(prog: str, message: str, status: int = 2) -> int:
    """Prints the one line a command ends with on bad input; returns the exit status."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    raise SystemExit(report_error(prog, message, status))


class OneLineArgumentParser(argparse.ArgumentParser):
    """Reports bad arguments as one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_command(prog: str, run, args: argparse.Namespace) -> int:
    """Runs `run(args, clock)`; bad input and Ctrl-C end in one line on stderr, no traceback."""
    try:
        return run(args, Stopwatch())
    except KeyboardInterrupt:
        fail(prog, "interrupted", status=130)
    except UsageError as error:
        fail(prog, str(error))


def add_model_arguments(parser: argparse.ArgumentParser, model_help: str | None = None, prompts: bool = True) -> None:
    """--model, --list-models, the device's options; with `prompts` (a command that draws from a
    prompt and can compile its denoiser) also --embeddings-dir and --compile."""
    parser.add_argument(
        "--model",
        metavar="DIR|NAME",
        help=model_help or "model folder: one written by ldm-train, or a diffusers-format Stable Diffusion "
        "folder (model_index.json, unet/, vae/, text_encoder/, ...); or a built-in model's name "
        f"(--list-models; a path wins). Default: the built-in {DEFAULT_MODEL!r} model.",
    )
    parser.add_argument("--list-models", action=ListModels, help="list the built-in models (name, size, what they draw) and exit")
    if prompts:
        add_embeddings_argument(parser)
    add_device_arguments(parser, compiles=prompts)


def add_embeddings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embeddings-dir", metavar="DIR",
        help="folder of textual-inversion embeddings (.safetensors, .pt, .bin) that prompts use by writing a "
        "file's name, as in AUTOMATIC1111 (default: the model folder's embeddings/)",
    )  # fmt: skip


def check_embeddings_dir(args: argparse.Namespace) -> None:
    if args.embeddings_dir is not None and not Path(args.embeddings_dir).is_dir():
        raise UsageError(f"--embeddings-dir {args.embeddings_dir} is not a folder")


def add_device_arguments(parser: argparse.ArgumentParser, compile_by_default: bool = False, compiles: bool = True) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (default: cuda if present, else cpu)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights and activations precision (default: fp16 on GPU; on CPU fp32, or bf16 with --compile "
        "where the processor computes bf16 natively: AMX or AVX512-BF16)",
    )
    if not compiles:
        return
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=compile_by_default,
        help="channels-last and torch.compile for the denoiser and the VAE decoder: the first image compiles "
        "(a minute or more, cached for later runs), the next ones are faster (docs/benchmarks.md) "
        f"(default: {'on' if compile_by_default else 'off'})",
    )


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r} asked for, but MPS is not available")
    return device


def resolve_dtype(name: str, device, compiled: bool = False):
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        from ldm.models.inference_speed import native_bf16

        # Measured on an AMX CPU: bf16 alone gains nothing; bf16 compiled is 0.7x fp32's time.
        return torch.bfloat16 if compiled and native_bf16(device) else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_pipeline_for(prog: str, path: Path, device, dtype_name: str, compile: bool, controlnets: tuple = (), embeddings_dir=None):
    """Pipeline.load as the commands do it; compiled (--compile), it draws a warm-up image here,
    and where compiling fails (no C++ compiler, an operation the compiler lacks) the model is
    loaded again uncompiled, with a notice: it runs as it is."""
    from ldm.pipeline import Pipeline

    if compile:
        dtype = resolve_dtype(dtype_name, device, compiled=True)
        pipeline = Pipeline.load(path, device=device, dtype=dtype, controlnets=controlnets, compile=True, embeddings_dir=embeddings_dir)
        print(f"{prog}: compiling {path.name} for this machine (a minute or more the first time; --no-compile skips it)",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            pipeline.warm_up()
            return pipeline
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            print(f"{prog}: compiling failed ({type(error).__name__}: {first_line}); running uncompiled", file=sys.stderr, flush=True)
    return Pipeline.load(path, device=device, dtype=resolve_dtype(dtype_name, device), controlnets=controlnets, embeddings_dir=embeddings_dir)


def resolve_model_path(model: str | None) -> Path:
    """--model: an existing path wins; else a built-in model's name; none: the default one."""
    try:
        return resolve_model(model)
    except UnknownModelError as error:
        raise UsageError(f"{error}; see --list-models") from None


class NumberedOutput(type(Path())):
    """An output name ldm chose in a folder (NNNNN-SEED.png), not one the user named: it
    never replaces a file; when the number is taken by the time the image is saved (a
    concurrent run), the next free number is used."""

    def number(self) -> int:
        return int(self.name.split("-", 1)[0])

    def with_number(self, number: int) -> "NumberedOutput":
        return NumberedOutput(self.with_name(f"{number:05d}-{self.name.split('-', 1)[1]}"))

    def number_is_free(self) -> bool:
        return not any(self.parent.glob(f"{self.number():05d}-*.png"))


def output_paths(out: str, n: int, first_seed: int) -> list[Path]:
    """FILE.png: that file (FILE-k.png for several), replaced if it exists; otherwise a folder
    of NNNNN-SEED.png, numbered after the files already there and never overwriting one."""
    target = Path(out)
    if target.suffix.lower() == ".png":
        if n == 1:
            return [target]
        return [target.with_name(f"{target.stem}-{k}.png") for k in range(n)]
    existing = [p.name[:5] for p in target.glob("*.png")] if target.is_dir() else []
    start = 1 + max((int(s) for s in existing if s.isdigit()), default=-1)
    return [NumberedOutput(target / f"{start + k:05d}-{first_seed + k}.png") for k in range(n)]


# Temporary PNGs of versions before ldm.files (".NAME.png.XXXXXXXX.tmp", no writer PID):
# removed once they are old enough that no writer can still be at work on them.
LEGACY_TEMPORARY_PNG = re.compile(r"^\..+\.png\.[A-Za-z0-9_]{8}\.tmp$")
LEGACY_AGE_S = 600


def clean_png_leftovers(folder: Path) -> None:
    """Removes the temporary PNGs of runs that crashed (their writer is gone)."""
    clean_leftovers(folder, suffix=".png")
    now = time.time()
    for entry in folder.glob(".*.tmp"):
        if LEGACY_TEMPORARY_PNG.match(entry.name) and entry.is_file() and now - entry.stat().st_mtime > LEGACY_AGE_S:
            entry.unlink(missing_ok=True)


def probe_writable(folder: Path) -> None:
    """Creates and removes a file in `folder`; OSError if that cannot be done. The one test
    that holds for root (whom os.access always lets write), read-only mounts and special
    file systems (/proc) alike."""
    probe = temporary_name(folder / "write-test")
    create_exclusive(probe)
    probe.unlink()


def check_output_dir(path: Path) -> None:
    """Creates the folder `path` if needed; UsageError if it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as error:
        raise UsageError(f"output directory {path} cannot be written: {error.strerror or error}") from None


def check_writable(paths: list[Path]) -> None:
    """Fails before any work if the outputs cannot be written (parent not creatable or not
    writable); removes the temporary PNGs crashed runs left there."""
    for parent in {p.parent for p in paths}:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create output folder {parent}: {error.strerror}") from None
        try:
            probe_writable(parent)
        except OSError as error:
            raise UsageError(f"cannot write in output folder {parent}: {error.strerror or error}") from None
        clean_png_leftovers(parent)
    for path in paths:
        if path.is_dir():
            raise UsageError(f"output {path} is a folder")


def save_png_atomic(image, path: Path, pnginfo=None) -> Path:
    """Writes the PNG under a temporary name beside `path` and renames it (no half-written
    PNGs), with the usual (umask) permissions. A NumberedOutput never replaces a file: it
    takes the next free number. Returns the path written."""
    if not isinstance(path, NumberedOutput):
        with writing_file(path) as temp:
            image.save(temp, format="PNG", pnginfo=pnginfo)
        return path
    temp = temporary_name(path)
    try:
        image.save(temp, format="PNG", pnginfo=pnginfo)
        while not (path.number_is_free() and publish_new_file(temp, path)):
            path = path.with_number(path.number() + 1)
    finally:
        temp.unlink(missing_ok=True)
    return path
