"""ControlNet flags shared by ldm-generate and ldm-inpaint. Each --control IMAGE is a unit;
the per-unit flags are repeatable and matched to the units by position (the k-th
--control-scale is the k-th unit's); a unit with no k-th value takes the default:

    --control edges.png --control-type canny --control-scale 1 --control scene.png --control-type layout --control-scale 0.5

is unit 0 (edges.png, canny, scale 1) and unit 1 (scene.png, layout, scale 0.5)."""

from __future__ import annotations

import argparse

from ldm.cli.common import UsageError
from ldm.control.units import CONTROL_TYPES, DEFAULT_CONTROL_TYPE, ControlUnit

# flag -> (ControlUnit field, type, help)
PER_UNIT = {
    "--control-type": ("type", str, f"what the control image is: {', '.join(CONTROL_TYPES)} (default {DEFAULT_CONTROL_TYPE}: "
                       "already a control map; canny: edges are taken from the picture; layout: a scenes layout map)"),
    "--control-scale": ("scale", float, "weight of the ControlNet's guidance, >= 0 (default 1)"),
    "--control-start": ("start", float, "fraction of the steps before the ControlNet joins (default 0)"),
    "--control-end": ("end", float, "fraction of the steps after which it stops (default 1)"),
    "--control-model": ("model", str, "which ControlNet, by name (default: the one made for the control type)"),
}


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "control", "steer the composition with ControlNets; repeat --control for several, and each "
        "per-unit flag once per unit, in the same order"
    )  # fmt: skip
    group.add_argument("--control", action="append", metavar="IMAGE", help="a control image (starts a unit)")
    for flag, (name, kind, text) in PER_UNIT.items():
        group.add_argument(flag, dest=f"control_{name}", action="append", type=kind, metavar="V", help=text)
    group.add_argument(
        "--controlnet",
        action="append",
        metavar="DIR",
        help="a ControlNet folder (ours, or diffusers format: config.json + .safetensors) beside the model's own",
    )


def control_units(args: argparse.Namespace) -> tuple[ControlUnit, ...]:
    """The units the flags describe, their images loaded; UsageError for a flag with more
    values than there are --control images, or an unreadable image."""
    from ldm.images import ImageError, load_image

    paths = args.control or []
    for flag, (name, _, _) in PER_UNIT.items():
        values = getattr(args, f"control_{name}") or []
        if len(values) > len(paths):
            raise UsageError(f"{flag} has {len(values)} value(s) for {len(paths)} --control image(s)")
    units = []
    for k, path in enumerate(paths):
        given = {name: values[k] for name, values in _per_unit_values(args).items() if k < len(values)}
        try:
            image = load_image(path, "control image")
        except ImageError as error:
            raise UsageError(str(error)) from None
        units.append(ControlUnit(image, **given))
    return tuple(units)


def _per_unit_values(args: argparse.Namespace) -> dict[str, list]:
    return {name: getattr(args, f"control_{name}") or [] for name, _, _ in PER_UNIT.values()}
