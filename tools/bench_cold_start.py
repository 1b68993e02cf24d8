"""Cold start of ldm-generate: where a one-image run's time goes before it samples.

    OMP_NUM_THREADS=1 python tools/bench_cold_start.py [--model DIR] [--repeats 3]

Runs `ldm-generate --help` and a one-image `ldm-generate --timings` in fresh processes (the
built-in model unless --model), the latter under `python -X importtime`, and prints the
median wall time, the run's own sections, and the import time of each heavy package (its
cumulative time where it is first imported) against the time of all ldm modules themselves.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "diffusers", "open_clip", "timm", "peft", "transformers", "torchvision", "accelerate",
         "sympy", "scipy", "datasets", "webdataset", "tensorboard", "cv2")  # fmt: skip
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_SECTION = re.compile(r"(\w+) ([\d.]+)s")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stderr


def import_seconds(stderr: str) -> dict[str, float]:
    """Cumulative import time of each HEAVY package where it is first imported (nested ones
    count inside their importer too), and the self time of all ldm modules."""
    seconds = {"ldm (own code)": 0.0}
    for own, cumulative, _, name in _IMPORT_LINE.findall(stderr):
        if name in HEAVY and name not in seconds:
            seconds[name] = int(cumulative) / 1e6
        if name == "ldm" or name.startswith("ldm."):
            seconds["ldm (own code)"] += int(own) / 1e6
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or built-in name (default: the built-in model)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    base = [sys.executable, "-m", "ldm.cli.generate"]
    model = ["--model", args.model] if args.model else []
    helps, runs, imports, sections = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "cold.png")
        for _ in range(args.repeats):
            helps.append(timed([*base, "--help"])[0])
            command = [sys.executable, "-X", "importtime", *base[1:], "a lake at dawn", *model,
                       "--steps", str(args.steps), "--out", out, "--timings", "--quiet"]  # fmt: skip
            seconds, stderr = timed(command)
            runs.append(seconds)
            imports.append(import_seconds(stderr))
            timings = next(line for line in stderr.splitlines() if line.startswith("time: "))
            sections.append({k: float(v) for k, v in _SECTION.findall(timings.partition("(")[2])})
    print(f"ldm-generate --help: {statistics.median(helps):.2f} s; one-image run: {statistics.median(runs):.2f} s "
          f"(median of {args.repeats}, wall, under -X importtime)")  # fmt: skip
    print("run sections (median s): " + ", ".join(f"{k} {statistics.median(s[k] for s in sections):.2f}" for k in sections[0]))
    print("| imported | s (median) |\n|---|---|")
    for name in imports[0]:
        print(f"| {name} | {statistics.median(each.get(name, 0.0) for each in imports):.3f} |")


if __name__ == "__main__":
    main()
