"""Benchmark: tiled against whole VAE decodes (ldm.pipeline.tiling): peak memory and time of
a large decode, and the seam error of tiles where both fit.

Peak memory is measured in a fresh subprocess per case (CPU: the growth of the process's
max RSS over the decode, as torch's allocations are invisible to tracemalloc; CUDA: the
allocator's peak), beside what ldm.memory estimates for it. The seam error decodes the
latents of a scene drawn at that size (encoded whole) both ways and compares the pixels: max
and mean absolute difference in 0-255 units, and PSNR; the same for a tiled encode (decoded
whole) against a whole one, and for both decodes against the drawn picture itself.

    python tools/bench_vae_tiling.py                                    # the built-in model's VAE
    python tools/bench_vae_tiling.py --model random --sizes              # its architecture, random weights
    python tools/bench_vae_tiling.py --model DIR --device cuda --sizes 2048 4096
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

from ldm.cli.common import OneLineArgumentParser


def parse_args(argv=None):
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="scenes", help="a model folder, a built-in name, or 'random' (the built-in "
                        "architecture with random weights) (default: scenes)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048], help="square sides for peak memory and time")
    parser.add_argument("--seam-sizes", type=int, nargs="*", default=[1024], help="square sides for the seam error "
                        "(larger than the tile, or nothing is tiled)")  # fmt: skip
    parser.add_argument("--tile", type=int, help="tile side in pixels (default: ldm.pipeline.tiling.tile_pixels)")
    parser.add_argument("--only", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)  # memory subprocess
    return parser.parse_args(argv)


def load(args):
    import torch

    from ldm.builtin_models import resolve_model
    from ldm.formats.model_folder import load_model, read_model_config
    from ldm.models.components import build_components
    from ldm.pipeline import Pipeline

    if args.model != "random":
        return Pipeline(load_model(resolve_model(args.model), device=args.device))
    torch.manual_seed(0)
    return Pipeline(build_components(read_model_config(resolve_model(None))).eval().to(args.device))


def tile_of(pipe, args) -> int:
    from ldm.pipeline.tiling import tile_pixels

    return args.tile or tile_pixels(pipe.components.vae.config)


def one_case(args) -> dict:
    """In this process: one decode of random latents at SIZE, whole or tiled; its peak memory and time."""
    import torch

    from ldm.memory import vae_bytes
    from ldm.pipeline.tiling import tiled

    size, mode = int(args.only[0]), args.only[1]
    pipe = load(args)
    tile = tile_of(pipe, args) if mode == "tiled" else None
    latents = torch.randn(pipe.latent_shape(1, size, size), generator=torch.Generator().manual_seed(0)).to(args.device)
    before = current_rss_mib() if args.device == "cpu" else torch.cuda.reset_peak_memory_stats() or torch.cuda.memory_allocated()
    start = time.perf_counter()
    with tiled(pipe.components.vae, tile):
        pipe.decode(latents).cpu()
    seconds = time.perf_counter() - start
    if args.device == "cpu":
        peak = peak_rss_mib() - before
    else:
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    estimate = vae_bytes(pipe.components, size, size, tile) / 2**20
    return {"size": size, "mode": mode, "peak_mib": round(peak), "estimate_mib": round(estimate), "seconds": round(seconds, 2)}


def current_rss_mib() -> float:
    """This process's resident memory now, after resetting its peak (max RSS) to it."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # Linux: the peak RSS counter starts again from the current RSS
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """The peak resident memory since the last reset (VmHWM; ru_maxrss does not see resets)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure_case(args, size: int, mode: str) -> dict:
    command = [sys.executable, __file__, "--only", str(size), mode, "--model", args.model, "--device", args.device]
    if args.tile:
        command += ["--tile", str(args.tile)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def difference(a, b) -> dict:
    """Pixels in [-1, 1] compared in 0-255 units."""
    error = (a.float().clamp(-1, 1) - b.float().clamp(-1, 1)).abs() * 127.5
    mse = float((error**2).mean())
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")
    return {"max": round(float(error.max()), 2), "mean": round(float(error.mean()), 3), "psnr_db": round(psnr, 1)}


def seam_error(pipe, args, size: int) -> dict:
    from ldm.images import from_pil
    from ldm.pipeline.tiling import tiled
    from ldm.scenes.generator import make_scene

    vae, tile = pipe.components.vae, tile_of(pipe, args)
    pixels = from_pil([make_scene(seed=3, size=size)[0]]).to(args.device)  # (1, 3, size, size)
    latents = pipe.encode_images(pixels)
    whole = pipe.decode(latents)
    with tiled(vae, tile):
        tiled_decode = pipe.decode(latents)
        tiled_latents = pipe.encode_images(pixels)
    return {
        "size": size, "tile": tile,
        "decode": difference(tiled_decode, whole), "encode": difference(pipe.decode(tiled_latents), whole),
        "whole_vs_picture": difference(whole, pixels), "tiled_vs_picture": difference(tiled_decode, pixels),
    }  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.only:
        print(json.dumps(one_case(args)))
        return 0
    pipe = load(args)
    print(f"# model {args.model}, {args.device}, tile {tile_of(pipe, args)} px", flush=True)
    for size in args.seam_sizes:
        print(json.dumps({"seams": seam_error(pipe, args, size)}), flush=True)
    for size in args.sizes:
        for mode in ("whole", "tiled"):
            print(json.dumps({"decode": measure_case(args, size, mode)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
