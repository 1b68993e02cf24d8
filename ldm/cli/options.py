"""The command-line face of ldm.settings: one flag per setting, made from its declaration,
and the namespace argparse returns turned back into a Settings."""

from __future__ import annotations

import argparse
import dataclasses

from ldm.settings import DEFAULT_LIMITS, Limits, Settings, fields_of, option_of


def argparse_type(parse):
    if parse in (int, float, str):
        return parse  # argparse words their errors itself: "invalid int value: 'x'"

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in its errors
    return convert


def add_setting_arguments(parser: argparse.ArgumentParser, mode: str | tuple[str, ...], helps: dict[str, str] | None = None) -> None:
    """A flag for every setting `mode` (or any of several modes) takes; `helps` overrides a help
    text for this command. Defaults stay None in the namespace, so "not given" is told apart
    from "given the default"."""
    helps = helps or {}
    modes = (mode,) if isinstance(mode, str) else mode
    taken = {each.name for one in modes for each in fields_of(one)}
    for each in (each for each in dataclasses.fields(Settings) if each.name in taken):
        spec = option_of(each)
        if spec.flag is None:
            continue
        text = helps.get(each.name, spec.help)
        if each.default not in (None, "", ()) and "(default" not in text:
            text += f" (default {each.default})"
        action = "append" if spec.repeat else "store"
        parser.add_argument(spec.flag, dest=each.name, action=action, type=argparse_type(spec.parse), metavar=spec.metavar, help=text)


def settings_from_args(args: argparse.Namespace, mode: str) -> Settings:
    given = {}
    for each in fields_of(mode):
        value = getattr(args, each.name, None)
        if value is not None:
            given[each.name] = tuple(value) if option_of(each).repeat else value  # argparse appends to a list
    return Settings(**given)


# What each limit counts, for --help (a limit missing here is shown with its default only).
LIMIT_HELP = {
    "max_pixels": "pixels per image, width x height",
    "max_steps": "denoising steps",
    "max_images": "images per command or request",
    "max_mask_blur": "mask blur in pixels",
    "max_step_seconds": "a denoising step's estimated seconds of full-resolution attention, which grows with "
    "the pixel count squared",
}


def shown_default(value) -> str:
    """A default as a person reads it: 2097152, not 2.09715e+06; 256, not 256.0."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits", "checked before any work; raise them if your hardware has room")
    for each in dataclasses.fields(Limits):
        flag = "--" + each.name.replace("_", "-")
        what = LIMIT_HELP.get(each.name)
        default = f"default {shown_default(each.default)}"
        group.add_argument(flag, type=type(each.default), metavar="N", help=f"{what} ({default})" if what else f"({default})")


def limits_from_args(args: argparse.Namespace) -> Limits:
    given = {each.name: getattr(args, each.name) for each in dataclasses.fields(Limits) if getattr(args, each.name) is not None}
    return dataclasses.replace(DEFAULT_LIMITS, **given)
