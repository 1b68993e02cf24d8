"""Writes a copy of a model folder with fp16 weights (half the size; loading casts them back
to the dtype asked for). Used to ship the demo model inside the package.

    python tools/export_fp16.py runs/scenes-text2img/model ldm/weights/scenes
    python tools/export_fp16.py runs/scenes-lcm/model ldm/weights/scenes-lcm --share-with ldm/weights/scenes
    python tools/export_fp16.py runs/scenes-controlnet-layout/controlnet/layout ldm/weights/scenes/controlnet/layout

A ControlNet folder (config.json + safetensors, its control type kept) is written the same way.

--share-with BASE: parts whose fp16 weights equal BASE's (a distilled or fine-tuned denoiser keeps
the VAE and text encoder) are left out and read from BASE (model.yaml's parts_from).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli.common import report_error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="model folder (ldm format) or ControlNet folder")
    parser.add_argument("target", help="folder to write (replaced atomically if it is a model folder)")
    parser.add_argument("--share-with", metavar="BASE", help="model folder whose equal parts are shared, not copied")
    args = parser.parse_args(argv)

    import torch

    from ldm.control.model import control_type_of, is_controlnet_folder, load_controlnet, save_controlnet
    from ldm.formats.model_folder import ModelError, load_model, save_model

    try:
        if is_controlnet_folder(Path(args.source)):
            net = load_controlnet(args.source, dtype=torch.float16)
            save_controlnet(net, control_type_of(Path(args.source)), args.target)
            print(f"wrote {args.target} ({_mib(Path(args.target)):.1f} MiB)")
            return 0
        components = load_model(args.source)
        save_model(components.to(dtype=torch.float16), args.target)
        if args.share_with:
            shared = share_parts(Path(args.target), Path(args.share_with))
            print(f"shared with {args.share_with}: {', '.join(shared) or 'nothing (no part is equal)'}")
    except ModelError as error:
        return report_error("export_fp16", str(error))
    print(f"wrote {args.target} ({_mib(Path(args.target)):.1f} MiB)")
    return 0


def _mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20


def share_parts(target: Path, base: Path) -> list[str]:
    """Removes target's weight files that equal base's, tensor for tensor, and points model.yaml's
    parts_from at base (relative, so the pair can move together)."""
    import os

    import yaml
    from safetensors.torch import load_file

    from ldm.formats.model_folder import CONFIG_FILE, WEIGHT_FILES, weight_file

    shared = []
    for name in WEIGHT_FILES:
        mine, theirs = target / WEIGHT_FILES[name], base / weight_file(base, name)
        if not (mine.is_file() and theirs.is_file()):
            continue
        a, b = load_file(mine), load_file(theirs)
        if a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].equal(b[k]) for k in a):
            shared.append(name)
    if shared:
        document = yaml.safe_load((target / CONFIG_FILE).read_text())
        document["parts_from"] = os.path.relpath(base.resolve(), target.resolve())
        (target / CONFIG_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
        for name in shared:
            (target / WEIGHT_FILES[name]).unlink()
    return shared


if __name__ == "__main__":
    sys.exit(main())
