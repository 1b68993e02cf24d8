"""ldm-serve: a web page and an AUTOMATIC1111-compatible HTTP API on a model kept loaded."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from ldm.cli.common import (
    OneLineArgumentParser,
    UsageError,
    add_device_arguments,
    add_embeddings_argument,
    check_embeddings_dir,
    load_pipeline_for,
    resolve_device,
    resolve_model_path,
    run_command,
)
from ldm.cli.options import add_limit_arguments, limits_from_args
from ldm.prompts.syntax import PROMPT_SYNTAXES
from ldm.timing import Stopwatch

PROG = "ldm-serve"
API_KEY_VARIABLE = "LDM_SERVE_API_KEY"
DEFAULT_MAX_WORK_SECONDS = 600.0

EXAMPLES = f"""examples:
  ldm-serve                                  # the built-in model on http://127.0.0.1:7860
  ldm-serve --model runs/scenes/model --model ~/sd-2-1-base   # switch with /sdapi/v1/options
  ldm-serve --host 0.0.0.0 --api-key SECRET  # reachable from other machines, with a key

Clients of AUTOMATIC1111's API (/sdapi/v1/txt2img, img2img, progress, ...) work unchanged;
the API's own documentation is at /docs. The key can also come from ${API_KEY_VARIABLE}."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Serve a latent diffusion model: a web page and AUTOMATIC1111's HTTP API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="model folder (ours or diffusers SD); repeat to offer several, the first is loaded "
        "(default: the built-in demo model)",
    )
    parser.add_argument(
        "--lora-dir", metavar="DIR",
        help="folder of NAME.safetensors LoRAs that prompts name as <lora:NAME:WEIGHT> (listed at /sdapi/v1/loras)",
    )  # fmt: skip
    add_embeddings_argument(parser)  # listed at /sdapi/v1/embeddings
    parser.add_argument(
        "--prompt-syntax", choices=PROMPT_SYNTAXES,
        help="how prompts are read when a request does not say (its prompt_syntax field): a1111 or plain "
        "(default: the model's own, else a1111)",
    )  # fmt: skip
    add_device_arguments(parser, compile_by_default=True)  # the warm-up is paid once, at startup
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860, as AUTOMATIC1111)")
    parser.add_argument("--api-key", metavar="KEY", help="require this key on every request (Bearer token, or Basic auth password)")
    parser.add_argument("--insecure", action="store_true", help="allow another address than localhost without --api-key")
    group = parser.add_argument_group("server limits")
    group.add_argument("--max-upload-bytes", type=int, default=32 * 1024 * 1024, metavar="N", help="request body size (default 32 MiB)")
    group.add_argument("--max-queue", type=int, default=8, metavar="N", help="jobs waiting; beyond it: 503 (default 8)")
    group.add_argument(
        "--max-connections", type=int, default=64, metavar="N", help="connections open at once; requests beyond get 503 (default 64)"
    )
    group.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="S",
        help="seconds a client has to send a request's headers, and the longest pause inside its body; "
        "slower connections are closed (default 10)",
    )  # fmt: skip
    group.add_argument(
        "--max-work-seconds", type=float, default=DEFAULT_MAX_WORK_SECONDS, metavar="S",
        help="the most work one request may ask for, estimated from its pixels, steps and images and this "
        "machine's speed (measured at startup); beyond it: 400 with the estimate (default 600; 0: no limit)",
    )  # fmt: skip
    add_limit_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_entries(paths: list[str] | None):
    """One entry per --model, titled by its folder name (made unique)."""
    from ldm.server.worker import ModelEntry

    entries, titles = [], set()
    for given in paths or [None]:
        path = resolve_model_path(given)
        if not path.is_dir():
            raise UsageError(f"model folder not found: {path}")
        title, k = path.name, 1
        while title in titles:
            k += 1
            title = f"{path.name}-{k}"
        titles.add(title)
        entries.append(ModelEntry(title, path))
    return entries


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound before the model loads, so a busy port fails in a second, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    sock.listen(128)
    return sock


def model_loader(args: argparse.Namespace, device):
    """path -> Pipeline (with the folder's ControlNets); with --compile, compiled and warmed up
    before it serves, or, where compiling fails, uncompiled with a notice."""
    return lambda path: load_pipeline_for(PROG, path, device, args.dtype, args.compile, embeddings_dir=args.embeddings_dir)


def run(args: argparse.Namespace, clock: Stopwatch) -> int:
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if not is_loopback(args.host) and not api_key and not args.insecure:
        raise UsageError(f"listening on {args.host} lets other machines in: give --api-key KEY (or --insecure)")
    for name, least in {"max_upload_bytes": 1, "max_queue": 1, "max_connections": 1, "header_timeout": 1e-3, "port": 0}.items():
        if not getattr(args, name) >= least:  # `not >=`: NaN is refused too
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.max_work_seconds >= 0:
        raise UsageError(f"--max-work-seconds must be 0 (no limit) or more, got {args.max_work_seconds}")
    if args.lora_dir is not None and not Path(args.lora_dir).is_dir():
        raise UsageError(f"--lora-dir {args.lora_dir} is not a folder")
    check_embeddings_dir(args)
    limits = limits_from_args(args)
    entries = model_entries(args.model)
    sock = listening_socket(args.host, args.port)

    import uvicorn

    from ldm.formats.model_folder import ModelError
    from ldm.server.app import ServerOptions, create_app
    from ldm.server.connections import ConnectionLimits, server_config
    from ldm.server.work import describe_speed
    from ldm.server.worker import Worker

    device = resolve_device(args.device)
    loader = model_loader(args, device)
    try:
        pipeline = loader(entries[0].path)
    except ModelError as error:
        raise UsageError(str(error)) from None
    max_work = args.max_work_seconds or None
    worker = Worker(pipeline, entries[0], entries, loader, limits, max_queue=args.max_queue, max_work_seconds=max_work)
    if worker.speed is not None:
        print(f"{PROG}: work limit {max_work:g} s per request; {describe_speed(worker.speed, pipeline)}", file=sys.stderr)
    flags = {**vars(args), "api_key": api_key}  # the key itself is never shown (/sdapi/v1/cmd-flags)
    options = ServerOptions(
        api_key=api_key, max_upload_bytes=args.max_upload_bytes, lora_dir=args.lora_dir,
        prompt_syntax=args.prompt_syntax, command_flags=flags,
    )  # fmt: skip
    app = create_app(worker, options)
    host, port = sock.getsockname()[:2]
    print(f"{PROG}: {entries[0].title} on {device}; listening on http://{host}:{port}", file=sys.stderr, flush=True)
    connections = ConnectionLimits(head_seconds=args.header_timeout, body_seconds=args.header_timeout, max_connections=args.max_connections)
    server = uvicorn.Server(server_config(app, connections))
    server.run(sockets=[sock])
    worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
