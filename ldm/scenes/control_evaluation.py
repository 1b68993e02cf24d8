"""How well a ControlNet steers the scenes model, on layouts it never trained on.

For every prompt, scenes of exactly what it describes are drawn from a reserved dataset seed
(ldm.scenes.seeds.CONTROL_REFERENCE); each gives the control image (its layout map, or the
drawing itself for canny). The model draws the prompt with that control and without it (same
seed), timed side by side; the preprocessor's view of each image is compared with the
control: region mean IoU by the layout segmenter, or edge F1 (2 px) of OpenCV's Canny. The
attribute judge scores both sets, so a ControlNet that follows maps but loses the prompt shows.
The model's VAE round trip of each drawing is scored the same way: the most any denoiser
can reach through that VAE, which says whether a missed target is the ControlNet's or the VAE's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from ldm.control.layout_map import REGIONS, layout_image
from ldm.control.preprocessors import canny
from ldm.control.units import ControlUnit
from ldm.images import from_pil
from ldm.scenes import seeds
from ldm.scenes.attribute_classifier import AttributeClassifier
from ldm.scenes.control_metrics import RegionIoU, edge_f1
from ldm.scenes.draw import draw_scene_with_layout
from ldm.scenes.generator import scene_seed
from ldm.scenes.prompts import EvalPrompt
from ldm.scenes.scoring import score_predictions
from ldm.scenes.vae_reconstruction import through_vae

METRICS = {"layout": "region mIoU", "canny": "edge F1 (2 px)"}
# The targets: the figure with control, and how many times the no-control figure it must be.
TARGETS = {"layout": (0.8, 2.0), "canny": (0.5, 3.0)}
MAX_ACCURACY_DROP = 0.02  # attribute accuracy with control may fall at most this much


@dataclass(frozen=True)
class ControlEvalSettings:
    control_type: str  # layout | canny
    n_per_prompt: int = 4
    steps: int = 20
    sampler: str = "dpm++2m"
    cfg: float = 7.5
    seed: int = 0
    size: int = 128
    scale: float = 1.0


@dataclass
class ControlCase:
    """One held-out scene: the prompt, its drawing and region map, and what the model made."""

    prompt: EvalPrompt
    picture: Image.Image
    regions: np.ndarray  # (size, size) ldm.control.layout_map.REGIONS indices
    steered: Image.Image | None = None
    plain: Image.Image | None = None
    round_trip: Image.Image | None = None  # the picture through the model's VAE and back

    def control(self, control_type: str) -> Image.Image:
        """What the user would give: the layout map, or (canny) a picture to take edges from."""
        return layout_image(self.regions) if control_type == "layout" else self.picture

    def unit(self, control_type: str, scale: float) -> ControlUnit:
        return ControlUnit(self.control(control_type), control_type, scale)

    @cached_property
    def edges(self) -> np.ndarray:
        """The drawing's Canny edges, what a canny-steered image is compared with (once per case)."""
        return _edges(self.picture)


def held_out_case(prompt: EvalPrompt, index: int, size: int) -> ControlCase:
    picture, regions = draw_scene_with_layout(prompt.scene, scene_seed(seeds.CONTROL_REFERENCE, index), size)
    return ControlCase(prompt, picture, regions)


class Adherence:
    """How closely a set of images follows their cases' controls (higher is closer): the
    layout regions' mean IoU over the whole set (ldm.scenes.control_metrics.RegionIoU), or the
    mean of the images' edge F1."""

    def __init__(self, control_type: str, segmenter=None):
        if control_type == "layout" and segmenter is None:
            raise ValueError("layout adherence needs the layout segmenter")
        self.control_type = control_type
        self.segmenter = segmenter
        self.regions = RegionIoU(len(REGIONS))
        self.scores: list[float] = []

    def add(self, image: Image.Image, case: ControlCase) -> None:
        if self.control_type == "layout":
            self.regions.add(self.segmenter.predict(from_pil([image]))[0].numpy(), case.regions)
        else:
            self.scores.append(edge_f1(_edges(image), case.edges))

    def score(self) -> float:
        return self.regions.mean() if self.control_type == "layout" else float(np.mean(self.scores))

    def details(self) -> dict:
        """Layout: the IoU of each region that occurred."""
        if self.control_type != "layout":
            return {}
        return {REGIONS[index]: iou for index, iou in self.regions.per_region().items()}

    def fresh(self) -> "Adherence":
        return Adherence(self.control_type, self.segmenter)


def _edges(image: Image.Image) -> np.ndarray:
    return np.asarray(canny(image).convert("L")) > 0


def evaluate_control(
    pipe,
    classifier: AttributeClassifier,
    adherence: Adherence,
    prompts: Sequence[EvalPrompt],
    settings: ControlEvalSettings,
    progress: Callable | None = None,
) -> tuple[dict, list[ControlCase]]:
    """The report (plain numbers) and every case with its two images; `adherence` says which
    figure (a fresh copy scores each set)."""
    options = dict(steps=settings.steps, cfg=settings.cfg, sampler=settings.sampler, width=settings.size,
                   height=settings.size, n=1, progress=False)  # fmt: skip
    seconds = {"with_control": 0.0, "without_control": 0.0}
    scores = {"with_control": adherence.fresh(), "without_control": adherence.fresh(), "vae_round_trip": adherence.fresh()}
    cases = []
    indexed = list(enumerate(prompts))
    for p, prompt in progress(indexed) if progress else indexed:
        for k in range(settings.n_per_prompt):
            index = p * settings.n_per_prompt + k
            case = held_out_case(prompt, index, settings.size)
            unit = case.unit(settings.control_type, settings.scale)
            # Alternated image by image, so both timings see the same machine load.
            started = time.perf_counter()
            case.steered = pipe.generate(prompt.text, controls=(unit,), seed=settings.seed + index, **options).images[0]
            seconds["with_control"] += time.perf_counter() - started
            started = time.perf_counter()
            case.plain = pipe.generate(prompt.text, seed=settings.seed + index, **options).images[0]
            seconds["without_control"] += time.perf_counter() - started
            scores["with_control"].add(case.steered, case)
            scores["without_control"].add(case.plain, case)
            case.round_trip = through_vae(pipe, [case.picture])[0]
            scores["vae_round_trip"].add(case.round_trip, case)
            cases.append(case)

    def accuracy(which: str) -> dict:
        per_prompt = [[c for c in cases if c.prompt is prompt] for prompt in prompts]
        labels = [classifier.predict(from_pil([getattr(c, which) for c in group]))[0] for group in per_prompt]
        return score_predictions(prompts, labels)

    images = len(cases)
    report = {
        "settings": asdict(settings),
        "metric": METRICS[settings.control_type],
        "images": images,
        "adherence": {name: score.score() for name, score in scores.items()},
        "adherence_by_region": {name: score.details() for name, score in scores.items()},
        "accuracy": {"with_control": accuracy("steered"), "without_control": accuracy("plain")},
        "seconds_per_image": {name: total / images for name, total in seconds.items()},
    }
    report["targets"] = check_control_targets(report)
    return report, cases


def check_control_targets(report: dict) -> dict:
    control_type = report["settings"]["control_type"]
    floor, times = TARGETS[control_type]
    steered, plain = report["adherence"]["with_control"], report["adherence"]["without_control"]
    # Reachable: the figure the target asks for is at most what the VAE's round trip of the very
    # scene scores (a perfect ControlNet still draws through the VAE).
    ceiling = report["adherence"].get("vae_round_trip")
    targets = {
        "adherence": {"target": floor, "measured": steered, "met": steered >= floor,
                      "reachable": None if ceiling is None else floor <= ceiling},
        "over_no_control": {"target": times, "measured": steered / plain if plain else None,
                            "met": steered >= times * plain,
                            "reachable": None if ceiling is None else times * plain <= ceiling},
    }  # fmt: skip
    for group in ("seen", "heldout"):
        with_control = report["accuracy"]["with_control"][group]["overall"]
        without = report["accuracy"]["without_control"][group]["overall"]
        if with_control is not None and without is not None:
            targets[f"{group}_accuracy_drop"] = {
                "target": MAX_ACCURACY_DROP, "measured": without - with_control, "met": without - with_control <= MAX_ACCURACY_DROP,
            }  # fmt: skip
    return targets


def control_markdown(report: dict, model: str, controlnet: str) -> str:
    s = report["settings"]
    acc = report["accuracy"]
    metric = report["metric"]

    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        f"# Control adherence: {controlnet} ({s['control_type']}) on {model}",
        "",
        f"{report['images']} held-out scenes ({s['n_per_prompt']} per prompt), {s['steps']} steps {s['sampler']}, "
        f"cfg {s['cfg']:g}, control scale {s['scale']:g}, {s['size']} px; the same prompts and seeds with and without control.",
        "",
        "The VAE round trip column scores each held-out drawing itself after the model's VAE: the most",
        "a ControlNet can reach through this VAE.",
        "",
        "| | with control | without control | VAE round trip |",
        "| --- | ---: | ---: | ---: |",
    ]
    columns = ("with_control", "without_control", "vae_round_trip")

    def number(value):
        return "-" if value is None else f"{value:.3f}"

    lines.append(f"| {metric} | " + " | ".join(number(report["adherence"].get(c)) for c in columns) + " |")
    by_region = report.get("adherence_by_region", {})
    for region in by_region.get("with_control", {}):
        lines.append(f"| IoU of {region} | " + " | ".join(number(by_region.get(c, {}).get(region)) for c in columns) + " |")
    for group in ("seen", "heldout"):
        lines.append(
            f"| attribute accuracy, {group} | {percent(acc['with_control'][group]['overall'])} "
            f"| {percent(acc['without_control'][group]['overall'])} | - |"
        )
    seconds = report["seconds_per_image"]
    lines += [f"| seconds per image | {seconds['with_control']:.3f} | {seconds['without_control']:.3f} | - |", "",
              "| target | measured | met | within the VAE's reach |", "| --- | ---: | :---: | :---: |"]  # fmt: skip
    for name, target in report["targets"].items():
        reach = {True: "yes", False: "no", None: "-"}[target.get("reachable")]
        lines.append(f"| {name.replace('_', ' ')} (target {target['target']:g}) | {number(target['measured'])} "
                     f"| {'yes' if target['met'] else 'no'} | {reach} |")  # fmt: skip
    return "\n".join(lines) + "\n"


@dataclass
class GridRow:
    """A row of ldm.scenes.sample_grid: (control, with control, without control) per case."""

    prompt: EvalPrompt
    images: list[Image.Image]


def control_rows(cases: Sequence[ControlCase], control_type: str, rows: int = 6, per_row: int = 2) -> list[GridRow]:
    """A few prompts spread over the run, each with its first `per_row` cases side by side."""
    prompts = list(dict.fromkeys(case.prompt for case in cases))
    picked = prompts[:: max(1, len(prompts) // rows)][:rows]
    grid = []
    for prompt in picked:
        images = []
        for case in [c for c in cases if c.prompt is prompt][:per_row]:
            shown = case.control(control_type) if control_type == "layout" else canny(case.picture)
            images += [shown, case.steered, case.plain]
        grid.append(GridRow(prompt, images))
    return grid
