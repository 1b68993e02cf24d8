"""Benchmark: per-image latency of ldm-serve (warm) against Pipeline.generate in-process and a
cold `ldm-generate`, same model and settings. The server and in-process runs alternate, so
that machine noise hits both alike; the target is server / in-process <= 1.15. Threads: set
OMP_NUM_THREADS for all three alike (the server and ldm-generate inherit it).

    python tools/bench_serve.py                        # the built-in demo model on CPU
    python tools/bench_serve.py --model DIR --repeats 5 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from ldm.server.process import ServerProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the built-in demo model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    settings = {"prompt": "a red circle above a blue square", "steps": args.steps, "seed": 7, "cfg": 7.5}
    model = ["--model", args.model] if args.model else []

    from ldm.pipeline import Pipeline

    pipe = Pipeline.load(args.model)
    request = {"prompt": settings["prompt"], "steps": args.steps, "seed": 7, "cfg_scale": 7.5}
    server_times, local_times = [], []
    with ServerProcess(*model, "--device", "cpu", "--no-compile") as server:  # uncompiled: like for like with the in-process run
        httpx.post(server.url + "/sdapi/v1/txt2img", json=request, timeout=600)  # warm up both
        pipe.generate(settings["prompt"], steps=args.steps, seed=7, progress=False)
        for _ in range(args.repeats):
            started = time.perf_counter()
            answer = httpx.post(server.url + "/sdapi/v1/txt2img", json=request, timeout=600)
            server_times.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            started = time.perf_counter()
            pipe.generate(settings["prompt"], steps=args.steps, seed=7, progress=False)
            local_times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ldm.cli.generate", settings["prompt"], *model, "--steps", str(args.steps), "--seed", "7", "--quiet", "--out", out + "/x.png"]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        cold = time.perf_counter() - started
    served, local = statistics.median(server_times), statistics.median(local_times)
    print(f"{args.steps} steps, median of {args.repeats}, s / image")
    print(f"  ldm-serve (warm, HTTP + PNG + base64)  {served:.3f}")
    print(f"  Pipeline.generate in-process           {local:.3f}")
    print(f"  ldm-generate (cold, one run)           {cold:.3f}")
    print(f"ratio server / in-process: {served / local:.3f} (target <= 1.15); cold / server: {cold / served:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
