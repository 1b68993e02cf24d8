"""The evaluation report as markdown (for people and the README) and JSON (for tools)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ldm.files import write_file_atomic
from ldm.scenes.attribute_classifier import CONCEPT_HEADS, HEADS
from ldm.scenes.model_evaluation import TARGET_SETTINGS


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _cell(group: dict, attribute: str | None = None) -> str:
    if attribute is None:
        return _percent(group["overall"])
    entry = group["per_attribute"].get(attribute)
    return "–" if entry is None else f"{_percent(entry['accuracy'])} ({entry['checked']})"


def accuracy_table(report: dict) -> list[str]:
    sources = [report["generated"]["accuracy"], report["real"]["accuracy"]]
    names = ["generated", "real scenes"]
    if "real_through_vae" in report:  # reports written before it was measured lack it
        sources.append(report["real_through_vae"]["accuracy"])
        names.append("real via VAE")
    generated = sources[0]
    lines = [
        "| attribute | " + " | ".join(f"{group}: {name}" for group in ("seen", "held-out") for name in names) + " |",
        "| --- |" + " ---: |" * (2 * len(names)),
    ]
    row = lambda label, get: f"| {label} | " + " | ".join(  # noqa: E731
        get(source[group]) for group in ("seen", "heldout") for source in sources
    ) + " |"
    asserted = [name for name in (*HEADS, *CONCEPT_HEADS) if name in generated["all"]["per_attribute"]]
    lines += [row(name, lambda g, name=name: _cell(g, name)) for name in asserted]
    lines.append(row("**all asserted attributes**", lambda g: f"**{_percent(g['overall'])}**"))
    lines.append(row("every assertion of an image right", lambda g: _percent(g["all_correct"])))
    lines.append(row("images", lambda g: str(g["images"])))
    return lines


def markdown_report(report: dict, model_name: str = "") -> str:
    settings = report["settings"]
    lines = [
        f"## Evaluation{': ' + model_name if model_name else ''}",
        "",
        f"{report['prompts']['seen']} seen and {report['prompts']['heldout']} held-out prompts, "
        f"{settings['n_per_prompt']} images each; {settings['steps']} steps {settings['sampler']}, "
        f"cfg {settings['cfg']:g}, {settings['size']} px, seed {settings['seed']}.",
        "",
        "Attribute accuracy: the classifier's reading of each image against what its prompt "
        "states (only stated attributes count; the number of checks in brackets). "
        "'real scenes' are real drawings of the same prompts: the ceiling the classifier allows; "
        "'real via VAE' the same drawings through the model's VAE and back: the ceiling that VAE allows.",
        "",
        *accuracy_table(report),
        "",
        "| diversity (same prompt) | generated | real scenes |",
        "| --- | ---: | ---: |",
    ]
    for key, label in (("feature_distance", "classifier feature distance"), ("pixel_std", "pixel std")):
        lines.append(f"| {label} | {_number(report['generated']['diversity'][key])} | {_number(report['real']['diversity'][key])} |")
    vae = report["vae"]
    if vae:
        lines += [
            "",
            f"VAE reconstruction on {vae['images']} unseen scenes at {vae['size']} px: "
            f"PSNR {_number(vae['psnr'], 2)} dB (worst {_number(vae['psnr_min'], 2)}), "
            f"SSIM {_number(vae['ssim'])} (worst {_number(vae['ssim_min'])}).",
        ]
    judge = (report.get("classifier") or {}).get("accuracy_on_fresh_scenes")
    if judge:
        readings = ", ".join(f"{name} {_percent(value)}" for name, value in judge.items())
        lines += ["", f"The judge, an attribute classifier trained on real scenes only, on fresh real scenes: {readings}."]
    timing = report["timing"]
    sections = ", ".join(f"{k} {v:.3f}" for k, v in timing["seconds_per_image_by_section"].items())
    lines += ["", f"Generation: {timing['seconds_per_image']:.3f} s per image ({sections})."]
    lines += ["", _targets_table(report)]
    return "\n".join(lines) + "\n"


def _targets_table(report: dict) -> str:
    note = "" if report["at_target_settings"] else f" (this run is not at the targets' settings: {TARGET_SETTINGS})"
    lines = [f"Targets{note}:", "", "| target | goal | measured | met |", "| --- | ---: | ---: | :---: |"]
    for name, entry in report["targets"].items():
        if name.endswith("_db"):
            show = lambda v: f"{_number(v, 2)} dB"  # noqa: E731
        elif name.startswith("seconds"):
            show = lambda v: f"{_number(v, 2)} s"  # noqa: E731
        else:
            show = _percent
        met = {True: "yes", False: "no", None: "–"}[entry["met"]]
        bound = "≤" if entry.get("at_most") else "≥"
        lines.append(f"| {name} | {bound} {show(entry['target'])} | {show(entry['measured'])} | {met} |")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    # inf (a lossless VAE) is not JSON; write it as the string "inf".
    def clean(value):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    write_file_atomic(path, json.dumps(clean(report), indent=1) + "\n")
