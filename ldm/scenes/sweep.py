"""Quality against time: attribute accuracy and seconds per image for a list of (model,
sampler, steps, cfg) points, as a table and a PNG plot (tools/evaluate.py --sweep)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class SweepPoint:
    model: Optional[str]  # None: the evaluation's --model
    sampler: str
    steps: int
    cfg: Optional[float]  # None: the evaluation's --cfg

    @property
    def label(self) -> str:
        cfg = "" if self.cfg is None else f" cfg {self.cfg:g}"
        return f"{self.model + ' ' if self.model else ''}{self.sampler} {self.steps}{cfg}"


def parse_sweep(text: str) -> list[SweepPoint]:
    """'[MODEL@]SAMPLER:STEPS[:CFG],...', e.g. 'scenes@dpm++2m:20,scenes-lcm@lcm:4:7.5'."""
    points = []
    for entry in (e.strip() for e in text.split(",")):
        model, _, rest = entry.rpartition("@")
        fields = rest.split(":")
        if len(fields) not in (2, 3) or not fields[0]:
            raise ValueError(f"--sweep entry {entry!r} is not [MODEL@]SAMPLER:STEPS[:CFG]")
        try:
            steps = int(fields[1])
            cfg = float(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise ValueError(f"--sweep entry {entry!r}: STEPS must be a whole number and CFG a number") from None
        if steps < 1:
            raise ValueError(f"--sweep entry {entry!r}: STEPS must be at least 1")
        points.append(SweepPoint(model or None, fields[0], steps, cfg))
    return points


def sweep_row(point: SweepPoint, model: str, cfg: float, report: dict) -> dict:
    """One table row from an evaluation report of that point."""
    accuracy = report["generated"]["accuracy"]
    return {
        **asdict(point),
        "model": model,
        "cfg": cfg,
        "seen": accuracy.get("seen", {}).get("overall"),
        "heldout": accuracy.get("heldout", {}).get("overall"),
        "seconds_per_image": report["timing"]["seconds_per_image"],
    }


def sweep_markdown(rows: list[dict], n_per_prompt: int, device: str) -> str:
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        f"# Quality against time ({n_per_prompt} images per prompt, {device})",
        "",
        "| model | sampler | steps | cfg | seen | held-out | s/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['cfg']:g} | {percent(r['seen'])} | "
            f"{percent(r['heldout'])} | {r['seconds_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


SERIES = {"seen": (40, 90, 200), "heldout": (220, 90, 40)}  # colour per accuracy split


def sweep_plot(rows: list[dict], size: tuple[int, int] = (720, 480)) -> Image.Image:
    """Accuracy (seen and held-out) against seconds per image, each point labelled; a log time
    axis, since few-step and many-step samplers differ by an order of magnitude."""
    import math

    width, height = size
    left, right, top, bottom = 60, 90, 30, 50  # the right margin holds the last point's label
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    times = [max(r["seconds_per_image"], 1e-4) for r in rows]
    low, high = math.log10(min(times)), math.log10(max(times))
    low, high = (low - 0.1, high + 0.1) if high - low > 1e-9 else (low - 0.5, high + 0.5)

    def x_of(seconds):
        return left + (math.log10(max(seconds, 1e-4)) - low) / (high - low) * (width - left - right)

    def y_of(accuracy):
        return height - bottom - accuracy * (height - top - bottom)

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 34, y - 6), f"{tick}%", fill="black", font=font)
    for exponent in range(math.floor(low), math.ceil(high) + 1):
        for mantissa in (1, 2, 5):
            seconds = mantissa * 10.0**exponent
            if low <= math.log10(seconds) <= high:
                x = x_of(seconds)
                draw.line([x, height - bottom, x, height - bottom + 4], fill="black")
                draw.text((x - 10, height - bottom + 8), f"{seconds:g}", fill="black", font=font)
    draw.text((width // 2 - 60, height - 20), "seconds per image (log)", fill="black", font=font)
    draw.text((left, 8), "attribute accuracy:  seen (blue)  held-out (orange)", fill="black", font=font)
    for row in rows:
        x = x_of(row["seconds_per_image"])
        for split, colour in SERIES.items():
            if row[split] is not None:
                y = y_of(row[split])
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        anchor = row["seen"] if row["seen"] is not None else row["heldout"] or 0.0
        draw.text((x + 6, y_of(anchor) - 14), f"{row['sampler']} {row['steps']}", fill="black", font=font)
    return image
