"""Runs a command's main() in a fresh interpreter and tells how it ended and whether torch
had been imported by then: bad input that needs no model is to be told before that import."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]

PROBE = """
import sys
from {module} import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(status, 'torch' in sys.modules)
"""


def run_main(module: str, *args) -> tuple[int, bool, str]:
    """(exit status, torch imported, stderr) of `module`'s main(args)."""
    process = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    status, imported = process.stdout.split()
    return int(status), imported == "True", process.stderr
