"""Writes a copy of a model folder with fp16 weights (half the size; loading casts them back
to the dtype asked for). Used to ship the demo model inside the package.

    python tools/export_fp16.py runs/scenes-text2img/model ldm/weights/scenes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli.common import report_error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="model folder (ldm format)")
    parser.add_argument("target", help="folder to write (replaced atomically if it is a model folder)")
    args = parser.parse_args(argv)

    import torch

    from ldm.model_folder import ModelError, load_model, save_model

    try:
        components = load_model(args.source)
        save_model(components.to(dtype=torch.float16), args.target)
    except ModelError as error:
        return report_error("export_fp16", str(error))
    size = sum(f.stat().st_size for f in Path(args.target).iterdir()) / 2**20
    print(f"wrote {args.target} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
