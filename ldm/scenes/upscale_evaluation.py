"""Issue 26's upscaler targets: held-out scenes drawn at 512 px, downscaled to 128 px as an
upscaler is trained (ldm.data.degradations.downscale: antialiased bicubic, 8-bit), upscaled
back by each method, and scored against the true 512 px: PSNR and SSIM (ldm.metrics), the
F1 of Canny edges within 2 px (ldm.scenes.control_metrics.edge_f1), and seconds per image.
Goals: edge F1 at least 1.5x bicubic's, PSNR not below bicubic's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ldm.control.preprocessors import canny
from ldm.data.degradations import downscale
from ldm.images import from_pil, to_pil
from ldm.metrics import psnr, ssim
from ldm.scenes import seeds
from ldm.scenes.control_metrics import edge_f1
from ldm.scenes.generator import make_scene, scene_caption, scene_seed

HIGH, LOW = 512, 128
EDGE_TOLERANCE = 2  # pixels
EDGE_F1_GOAL = 1.5  # times bicubic's

# (low-resolution picture, its caption) -> the picture at the high resolution
Method = Callable[[Image.Image, str], Image.Image]


@dataclass(frozen=True)
class Scene:
    truth: Image.Image  # HIGH px
    low: Image.Image  # LOW px
    caption: str


def held_out_scenes(n: int, high: int = HIGH, low: int = LOW) -> list[Scene]:
    """`n` scenes from a dataset seed no model trains on, drawn at `high` px and downscaled to `low`."""
    scenes = []
    for index in range(n):
        seed = scene_seed(seeds.UPSCALER_EVALUATION, index)
        truth, attrs = make_scene(seed, high, "all")
        small = to_pil(downscale(from_pil([truth]), high // low))[0]
        scenes.append(Scene(truth, small, scene_caption(seed, attrs)))
    return scenes


def resize_method(resample: int, size: int = HIGH) -> Method:
    """A plain PIL resize (Image.BICUBIC, Image.LANCZOS, Image.NEAREST) to `size` px."""
    return lambda picture, caption: picture.resize((size, size), resample)


def model_method(upscaler, size: int = HIGH, **options) -> Method:
    """A diffusion upscaler (a Pipeline) with the scene's caption as its prompt and a fixed
    seed; `options` (steps, noise_level, ...) are the upscale's. A model of another factor is
    resized to `size` (Lanczos)."""

    def upscale(picture: Image.Image, caption: str) -> Image.Image:
        result = upscaler.upscale(caption, picture, seed=0, progress=False, **options).images[0]
        return result if result.size == (size, size) else result.resize((size, size), Image.LANCZOS)

    return upscale


def edges(picture: Image.Image) -> np.ndarray:
    """Canny edges (the ControlNet preprocessor's thresholds) as an (H, W) boolean map."""
    return np.asarray(canny(picture).convert("L")) > 0


def picture_scores(upscaled: Image.Image, truth: Image.Image) -> dict[str, float]:
    """PSNR (dB), SSIM and edge F1 of one upscaled picture against the truth."""
    a, b = ((from_pil([picture]) + 1) / 2 for picture in (upscaled, truth))  # (1, 3, H, W) in [0, 1]
    return {"psnr": psnr(a, b).item(), "ssim": ssim(a, b).item(), "edge_f1": edge_f1(edges(upscaled), edges(truth), EDGE_TOLERANCE)}


@torch.no_grad()
def evaluate_method(method: Method, scenes: list[Scene]) -> dict[str, float]:
    """Each figure's mean over `scenes`, and the upscale's seconds per image (scoring not counted)."""
    totals = {"psnr": 0.0, "ssim": 0.0, "edge_f1": 0.0}
    seconds = 0.0
    for scene in scenes:
        started = time.perf_counter()
        upscaled = method(scene.low, scene.caption)
        seconds += time.perf_counter() - started
        for name, value in picture_scores(upscaled, scene.truth).items():
            totals[name] += value
    return {**{name: total / len(scenes) for name, total in totals.items()}, "seconds_per_image": seconds / len(scenes)}


def against_bicubic(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each method's figures with its edge F1 as a multiple of bicubic's and its PSNR's
    difference from bicubic's (the goals' terms), when bicubic is among them."""
    base = results.get("bicubic")
    if base is None:
        return results
    return {
        name: {**figures, "edge_f1_x_bicubic": figures["edge_f1"] / max(base["edge_f1"], 1e-9), "psnr_minus_bicubic": figures["psnr"] - base["psnr"]}
        for name, figures in results.items()
    }


def report_markdown(results: dict[str, dict[str, float]], n: int) -> str:
    """A table of the figures, one row per method."""
    rows = [
        f"{n} held-out scenes, {HIGH} px downscaled to {LOW} px and upscaled back; edge F1: Canny, {EDGE_TOLERANCE} px.",
        "",
        "| method | PSNR (dB) | SSIM | edge F1 | edge F1 / bicubic | PSNR - bicubic | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in against_bicubic(results).items():
        ratio = f"{f['edge_f1_x_bicubic']:.2f}x" if "edge_f1_x_bicubic" in f else "-"
        delta = f"{f['psnr_minus_bicubic']:+.2f}" if "psnr_minus_bicubic" in f else "-"
        rows.append(f"| {name} | {f['psnr']:.2f} | {f['ssim']:.4f} | {f['edge_f1']:.3f} | {ratio} | {delta} | {f['seconds_per_image']:.3f} |")
    return "\n".join(rows)
