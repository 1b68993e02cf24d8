"""Draw a landscape from `SceneAttributes` with Pillow and numpy.

Scenes are drawn at twice the requested size and downsampled with LANCZOS, so flat-shaded
shapes get smooth edges cheaply. All randomness (cloud shapes, mountain ridges, where the
trees stand) comes from the `seed` argument, so the same seed gives the same pixels.

Layers, back to front: sky gradient (+ stars, glow), clouds, sun or moon; then the land
(mountains, ground) and the standing features (trees, house), both tinted by the light of
the hour; then lit windows; then, for a lake, the mirrored reflection of everything above
the waterline.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from ldm.control.layout_map import REGIONS

if TYPE_CHECKING:
    from ldm.scenes.generator import SceneAttributes

SUPERSAMPLE = 2

# Sky gradients as (fraction of the way from the top of the image to the horizon, colour).
SKY_STOPS = {
    "dawn": [(0.0, (95, 105, 190)), (0.55, (225, 150, 185)), (1.0, (255, 195, 130))],
    "noon": [(0.0, (30, 100, 215)), (1.0, (150, 200, 245))],
    "dusk": [(0.0, (45, 25, 90)), (0.5, (150, 50, 105)), (1.0, (250, 110, 35))],
    "night": [(0.0, (4, 6, 25)), (1.0, (25, 35, 75))],
}
# Multiplies everything on the ground, so the land takes the colour of the light.
LIGHT_TINT = {
    "dawn": (1.0, 0.82, 0.80),
    "noon": (1.0, 1.0, 1.0),
    "dusk": (0.95, 0.65, 0.55),
    "night": (0.32, 0.36, 0.55),
}
CLOUD_COLOURS = {
    "dawn": (250, 205, 215),
    "noon": (250, 250, 252),
    "dusk": (235, 140, 125),
    "night": (55, 60, 85),
}
SUN_COLOURS = {"dawn": (255, 225, 150), "noon": (255, 244, 165), "dusk": (255, 175, 70)}
MOON_COLOUR = (240, 236, 210)
# Snow ground takes only part of the light's colour, so a snowfield at dusk is not read as sand.
SNOW_LIGHT_STRENGTH = 0.45
WINDOW_GLOW = (255, 210, 110)
SNOW = (242, 246, 252, 255)  # on pine tips and roofs
WATER_TINT = np.array((15, 35, 60), dtype=np.float32)

# Fractions of the image height. The lake's waterline sits at the middle so the
# reflection has as much room as the scene it mirrors.
LAKE_HORIZON, LAKE_WATERLINE = 0.47, 0.50
LAND_HORIZON = 0.56
CELESTIAL_X = {"left": 0.2, "center": 0.5, "right": 0.8}
SLOTS = 5  # trees and the house each take their own column, so they can be counted


def draw_scene(attrs: SceneAttributes, seed: int, size: int) -> Image.Image:
    """Draw `attrs` as a `size` x `size` RGB image; the same seed gives identical pixels."""
    return _render(attrs, seed, size, None)


def draw_scene_with_layout(attrs: SceneAttributes, seed: int, size: int) -> tuple[Image.Image, np.ndarray]:
    """The scene and its layout: a (size, size) array of ldm.scenes.layout.REGIONS indices,
    drawn from the very shapes (same random draws) the scene is drawn from."""
    labels = np.zeros((size * SUPERSAMPLE,) * 2, dtype=np.uint8)  # all sky to begin with
    scene = _render(attrs, seed, size, labels)
    small = Image.fromarray(labels).resize((size, size), Image.Resampling.NEAREST)
    return scene, np.asarray(small)


def _render(attrs: SceneAttributes, seed: int, size: int, labels: np.ndarray | None) -> Image.Image:
    """draw_scene; with `labels` (supersampled), each region's index is painted there too."""
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    rng = random.Random(f"{seed}:draw")
    s = size * SUPERSAMPLE
    if attrs.setting == "lake":
        horizon, waterline = round(LAKE_HORIZON * s), round(LAKE_WATERLINE * s)
    else:
        horizon = waterline = round((LAND_HORIZON + rng.uniform(-0.03, 0.03)) * s)

    sky = _sky(attrs.time_of_day, s, horizon)
    if attrs.time_of_day == "night":
        _add_stars(sky, horizon, rng)
    centre, radius = _celestial_circle(attrs, s, horizon) if attrs.celestial else ((0.0, 0.0), 0.0)
    if attrs.celestial:
        _add_glow(sky, centre, radius, attrs.time_of_day)
    image = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    if attrs.clouds:
        _draw_clouds(ImageDraw.Draw(image), attrs.time_of_day, s, horizon, (centre, radius), rng)
    if attrs.celestial == "sun":
        ImageDraw.Draw(image).ellipse(_box(centre, radius), fill=SUN_COLOURS[attrs.time_of_day])
    elif attrs.celestial == "moon":
        _draw_moon(image, centre, radius)
    if labels is not None and attrs.celestial:
        _label_celestial(labels, attrs.celestial, centre, radius)

    land = np.zeros((s, s, 4), dtype=np.uint8)
    if attrs.mountains:
        _mountains(land, s, horizon, rng)
        if labels is not None:
            labels[land[..., 3] > 0] = REGIONS.index("mountains")
    _ground(land, attrs.setting, s, horizon, waterline, rng)
    if labels is not None:
        labels[horizon:] = REGIONS.index("ground")
        labels[waterline:] = REGIONS.index("water" if attrs.setting == "lake" else "ground")
    features = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    feature_labels = Image.new("L", (s, s), 0) if labels is not None else None
    windmill_rng = random.Random(f"{seed}:windmill") if attrs.windmill else None
    windows = _draw_standing_features(features, attrs, s, horizon, waterline, rng, feature_labels, windmill_rng)
    if feature_labels is not None:
        painted = np.asarray(feature_labels)
        labels[painted > 0] = painted[painted > 0]

    light = np.array(LIGHT_TINT[attrs.time_of_day], dtype=np.float32)
    land_light = np.broadcast_to(light, (s, s, 3)).copy()
    if attrs.setting == "snowfield":  # keep snow white-blue at dawn and dusk, pale at night
        land_light[horizon:] = 1 - SNOW_LIGHT_STRENGTH * (1 - light)
    scene = _composite_lit(image, Image.fromarray(land, "RGBA"), land_light)
    scene = _composite_lit(scene, features, light)
    if attrs.time_of_day == "night":  # lit windows glow, so they skip the light tint
        draw = ImageDraw.Draw(scene)
        for box in windows:
            draw.rectangle(box, fill=WINDOW_GLOW)
    if attrs.setting == "lake":
        scene = _reflect(scene, waterline, rng)
        if labels is not None:  # the mirrored shore and trees are water too
            labels[waterline:] = REGIONS.index("water")
    return scene.resize((size, size), Image.Resampling.LANCZOS)


def _box(centre: tuple[float, float], radius: float) -> list[float]:
    x, y = centre
    return [x - radius, y - radius, x + radius, y + radius]


def _gradient(stops: list[tuple[float, tuple[int, int, int]]], length: int) -> np.ndarray:
    """(length, 3) colours interpolated between stops placed at fractions of `length`."""
    t = np.linspace(0.0, 1.0, length)
    positions = [p for p, _ in stops]
    return np.stack([np.interp(t, positions, [c[i] for _, c in stops]) for i in range(3)], axis=1)


def _sky(time_of_day: str, s: int, horizon: int) -> np.ndarray:
    rows = np.empty((s, 3), dtype=np.float32)
    rows[:horizon] = _gradient(SKY_STOPS[time_of_day], horizon)
    rows[horizon:] = rows[horizon - 1]
    return np.repeat(rows[:, None, :], s, axis=1)


def _add_stars(sky: np.ndarray, horizon: int, rng: random.Random) -> None:
    s = sky.shape[0]
    for _ in range(int(0.0012 * s * s)):
        x, y = rng.randrange(s - 2), rng.randrange(int(0.8 * horizon))
        # 2x2 at double resolution so each star survives the downsample as a pixel.
        patch = sky[y : y + 2, x : x + 2]
        np.maximum(patch, rng.uniform(140, 255), out=patch)


def _celestial_circle(attrs: SceneAttributes, s: int, horizon: int) -> tuple[tuple[float, float], float]:
    x = CELESTIAL_X[attrs.celestial_position] * s
    if attrs.celestial == "moon":
        return (x, 0.2 * s), 0.06 * s
    if attrs.time_of_day == "noon":
        return (x, 0.14 * s), 0.07 * s
    return (x, horizon - 0.30 * s), 0.085 * s  # a low, larger sun at dawn and dusk


def _add_glow(sky: np.ndarray, centre: tuple[float, float], radius: float, time_of_day: str) -> None:
    s = sky.shape[0]
    ys, xs = np.mgrid[0:s, 0:s]
    distance = np.hypot(xs - centre[0], ys - centre[1])
    if time_of_day == "night":
        colour, strength, reach = MOON_COLOUR, 0.15, 2.5
    else:
        colour, strength, reach = SUN_COLOURS[time_of_day], 0.55, 3.0
    weight = strength * np.exp(-((distance / (reach * radius)) ** 2))[..., None]
    sky += weight * (np.array(colour, dtype=np.float32) - sky)


def _draw_moon(image: Image.Image, centre: tuple[float, float], radius: float) -> None:
    # A crescent reads as "moon" where a full disc could pass for a pale sun.
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse(_box(centre, radius), fill=255)
    draw.ellipse(_box((centre[0] + 0.55 * radius, centre[1] - 0.2 * radius), radius), fill=0)
    image.paste(MOON_COLOUR, (0, 0), mask)


def _draw_clouds(
    draw: ImageDraw.ImageDraw,
    time_of_day: str,
    s: int,
    horizon: int,
    avoid: tuple[tuple[float, float], float],
    rng: random.Random,
) -> None:
    """Draw 2-4 puffy clouds, kept clear of the `avoid` circle so the sun or moon stays visible."""
    colour = CLOUD_COLOURS[time_of_day]
    shadow = tuple(int(c * 0.85) for c in colour)
    (ax, ay), ar = avoid
    for number in range(rng.randint(2, 4)):
        for _ in range(20):
            cx = rng.uniform(0.1, 0.9) * s
            cy = rng.uniform(0.08 * s, max(0.1 * s, horizon - 0.3 * s))
            width = rng.uniform(0.14, 0.24) * s
            if ar == 0 or abs(cx - ax) > width / 2 + ar + 0.04 * s or abs(cy - ay) > ar + 0.1 * s:
                break
        else:
            if number:  # no clear spot left; the first cloud is drawn regardless
                continue
        puffs = []
        for i in range(5):
            px = cx - width / 2 + width * i / 4
            r = rng.uniform(0.025, 0.045) * s * (1.3 if i in (1, 2, 3) else 1.0)
            puffs.append((px, cy - 0.4 * r, r))
        for offset, fill in ((0.012 * s, shadow), (0.0, colour)):  # shaded underside first
            for px, py, r in puffs:
                draw.ellipse([px - 1.3 * r, py - r + offset, px + 1.3 * r, py + r + offset], fill=fill)
            base = [cx - width / 2, cy - 0.02 * s + offset, cx + width / 2, cy + 0.02 * s + offset]
            draw.rectangle(base, fill=fill)


def _fill_rows(land: np.ndarray, top: np.ndarray, colour, bottom: np.ndarray | None = None) -> None:
    """Paint each column x from row top[x] down to bottom[x] (or the image bottom)."""
    rows = np.arange(land.shape[0])[:, None]
    mask = rows >= top[None, :]
    if bottom is not None:
        mask &= rows < bottom[None, :]
    land[mask] = (*colour, 255)


def _wobble(s: int, rng: random.Random, amplitude: float, knots: int = 24) -> np.ndarray:
    """A smooth random curve across the image width, for ridges and snow lines."""
    values = [rng.uniform(-amplitude, amplitude) for _ in range(knots + 1)]
    return np.interp(np.arange(s), np.linspace(0, s - 1, knots + 1), values)


def _mountains(land: np.ndarray, s: int, horizon: int, rng: random.Random) -> None:
    xs = np.arange(s)
    # Far range: taller, hazier, snow-capped. Near range: lower and darker.
    ranges = (((0.10, 0.20), (140, 150, 178), True), ((0.05, 0.11), (92, 98, 118), False))
    for peak_range, colour, snowy in ranges:
        height = np.zeros(s)
        for _ in range(rng.randint(2, 4)):
            cx, peak, slope = rng.uniform(-0.1, 1.1) * s, rng.uniform(*peak_range) * s, rng.uniform(0.6, 1.3)
            height = np.maximum(height, peak - np.abs(xs - cx) * slope)
        height = np.where(height > 0, height + _wobble(s, rng, 0.008 * s, knots=40), 0)
        ridge = horizon - np.clip(height, 0, None)
        _fill_rows(land, ridge, colour)
        if snowy:
            snow_line = horizon - 0.65 * height.max() + _wobble(s, rng, 0.01 * s)
            _fill_rows(land, ridge, (240, 242, 248), bottom=snow_line)


def _ground(land: np.ndarray, setting: str, s: int, horizon: int, waterline: int, rng: random.Random) -> None:
    xs = np.arange(s)
    depth = s - horizon
    if setting == "lake":  # a strip of far shore; the water below is drawn by _reflect
        land[horizon:waterline] = (70, 110, 60, 255)
        return
    far, near = {
        "meadow": ((130, 180, 85), (55, 125, 45)),
        "desert": ((238, 210, 155), (225, 185, 120)),
        "snowfield": ((225, 233, 248), (248, 251, 255)),
    }[setting]
    land[horizon:, :, :3] = _gradient([(0.0, far), (1.0, near)], depth)[:, None, :]
    land[horizon:, :, 3] = 255
    if setting == "desert":
        # Overlapping dune bands, alternately lit and shaded, bigger towards the viewer.
        for k in range(1, 5):
            t = k / 5
            amplitude = (0.01 + 0.03 * t) * s
            wavelength = rng.uniform(0.5, 1.1) * s
            phase = rng.uniform(0, 2 * math.pi)
            crest = horizon + t**1.2 * depth + amplitude * np.sin(2 * math.pi * xs / wavelength + phase)
            _fill_rows(land, crest, (232, 196, 135) if k % 2 else (212, 168, 108))
    elif setting == "snowfield":
        # Soft blue shadow lines under gentle drifts.
        for k in range(1, 4):
            crest = horizon + (k / 4) * depth + _wobble(s, rng, 0.03 * s, knots=4)
            _fill_rows(land, crest, (205, 218, 240), bottom=crest + 0.015 * s)
    else:
        image = Image.fromarray(land, "RGBA")
        draw = ImageDraw.Draw(image)
        for _ in range(int(0.004 * s * s / 2)):  # grass tufts, sparser far away
            y = horizon + depth * rng.random() ** 0.6
            x, blade = rng.uniform(0, s), 0.004 * s + 0.02 * s * (y - horizon) / depth
            for dx in (-0.6, 0.0, 0.6):
                draw.line([(x, y), (x + dx * blade, y - blade)], fill=(40, 100, 35, 255), width=1)
        for _ in range(int(0.0004 * s * s)):  # a few flowers
            y, x = horizon + depth * (0.3 + 0.7 * rng.random()), rng.uniform(0, s)
            r = 0.004 * s
            colour = rng.choice([(250, 230, 80, 255), (250, 250, 250, 255)])
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        land[:] = np.asarray(image)


def _draw_standing_features(
    layer: Image.Image,
    attrs: SceneAttributes,
    s: int,
    horizon: int,
    waterline: int,
    rng: random.Random,
    labels: Image.Image | None = None,
    windmill_rng: random.Random | None = None,
) -> list[list[float]]:
    """Draw trees and the house, far to near; return window boxes that should glow at night.
    With `labels` ("L"), each shape is painted there too, in its region's index."""
    kinds = ["house"] * attrs.house + ["tree"] * attrs.trees
    slots = rng.sample(range(SLOTS), len(kinds))
    placed = []

    def place(kind: str, slot: int, rng: random.Random) -> None:
        x = (slot + 0.5) / SLOTS * s + rng.uniform(-0.015, 0.015) * s
        if attrs.setting == "lake":  # on the far shore, so they show in the reflection
            t, base = 0.0, waterline - 0.01 * s
        else:
            t = rng.uniform(0.15, 0.75)
            base = horizon + t * (s - horizon)
        placed.append((base, kind, x, t))

    for kind, slot in zip(kinds, slots):
        place(kind, slot, rng)
    if windmill_rng is not None:  # its own random stream: the rest of the scene is drawn as without it
        place("windmill", windmill_rng.choice([k for k in range(SLOTS) if k not in slots]), windmill_rng)
    colour_pen = ImageDraw.Draw(layer)
    label_pen = ImageDraw.Draw(labels) if labels is not None else None
    windows = []
    for base, kind, x, t in sorted(placed):
        draw = colour_pen if label_pen is None else _TwoPens(colour_pen, label_pen, REGIONS.index(kind))
        if kind == "house":
            windows += _draw_house(draw, x, base, (0.13 + 0.1 * t) * s, attrs.setting == "snowfield", rng)
        elif kind == "windmill":
            _draw_windmill(draw, x, base, (0.3 + 0.15 * t) * s, windmill_rng)
        elif attrs.setting == "snowfield":
            _draw_pine(draw, x, base, (0.15 + 0.15 * t) * s)
        else:
            _draw_round_tree(draw, x, base, (0.15 + 0.15 * t) * s, rng)
    return windows


class _TwoPens:
    """Draws each shape in colour and, with the same geometry, in one label on a second image."""

    def __init__(self, colour: ImageDraw.ImageDraw, labels: ImageDraw.ImageDraw, label: int):
        self.colour, self.labels, self.label = colour, labels, label

    def rectangle(self, shape, fill) -> None:
        self.colour.rectangle(shape, fill=fill)
        self.labels.rectangle(shape, fill=self.label)

    def ellipse(self, shape, fill) -> None:
        self.colour.ellipse(shape, fill=fill)
        self.labels.ellipse(shape, fill=self.label)

    def polygon(self, shape, fill) -> None:
        self.colour.polygon(shape, fill=fill)
        self.labels.polygon(shape, fill=self.label)


def _label_celestial(labels: np.ndarray, celestial: str, centre: tuple[float, float], radius: float) -> None:
    disc = Image.new("L", (labels.shape[1], labels.shape[0]), 0)
    draw = ImageDraw.Draw(disc)
    draw.ellipse(_box(centre, radius), fill=255)
    if celestial == "moon":  # the same bite _draw_moon takes out of the disc
        draw.ellipse(_box((centre[0] + 0.55 * radius, centre[1] - 0.2 * radius), radius), fill=0)
    labels[np.asarray(disc) > 0] = REGIONS.index(celestial)


def _draw_round_tree(draw: ImageDraw.ImageDraw, x: float, base: float, height: float, rng: random.Random) -> None:
    trunk = 0.05 * height
    draw.rectangle([x - trunk, base - 0.5 * height, x + trunk, base], fill=(95, 65, 40, 255))
    r = 0.3 * height
    cy = base - height + r
    leaf = rng.choice([(50, 120, 45), (60, 135, 50), (40, 105, 55)])
    for dx, dy, scale in ((-0.4, 0.35, 0.75), (0.4, 0.35, 0.75), (0.0, 0.0, 1.0)):
        draw.ellipse(_box((x + dx * r, cy + dy * r), scale * r), fill=(*leaf, 255))
    light = tuple(min(255, c + 30) for c in leaf)
    draw.ellipse(_box((x - 0.3 * r, cy - 0.3 * r), 0.35 * r), fill=(*light, 255))


def _draw_windmill(draw: ImageDraw.ImageDraw, x: float, base: float, height: float, rng: random.Random) -> None:
    """A tapered tower with a cap and four sails turned by a random angle (the concept the
    built-in model never saw: tools/make_scenes.py --concept windmill)."""
    bottom, top, hub_y = 0.17 * height, 0.09 * height, base - 0.78 * height
    draw.polygon([(x - bottom, base), (x + bottom, base), (x + top, hub_y), (x - top, hub_y)], fill=(215, 205, 185, 255))
    draw.polygon([(x - 1.3 * top, hub_y), (x + 1.3 * top, hub_y), (x, hub_y - 0.14 * height)], fill=(110, 60, 45, 255))
    draw.rectangle([x - 0.04 * height, base - 0.22 * height, x + 0.04 * height, base], fill=(90, 60, 40, 255))  # door
    angle, length, half_width = rng.uniform(0, math.pi / 2), 0.5 * height, 0.05 * height
    for k in range(4):
        a = angle + k * math.pi / 2
        dx, dy, nx, ny = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        tip, root = (x + dx * length, hub_y + dy * length), (x + dx * 0.08 * height, hub_y + dy * 0.08 * height)
        draw.polygon([(root[0] + nx * half_width, root[1] + ny * half_width), (tip[0] + nx * half_width, tip[1] + ny * half_width),
                      tip, root], fill=(245, 240, 230, 255))  # fmt: skip
        draw.polygon([root, tip, (x + dx * 0.02 * height, hub_y + dy * 0.02 * height)], fill=(80, 55, 40, 255))
    draw.ellipse(_box((x, hub_y), 0.035 * height), fill=(60, 45, 35, 255))


def _draw_pine(draw: ImageDraw.ImageDraw, x: float, base: float, height: float) -> None:
    draw.rectangle([x - 0.04 * height, base - 0.2 * height, x + 0.04 * height, base], fill=(90, 60, 40, 255))
    for tier in range(3):  # three stacked triangles, each with a snowy tip
        bottom = base - 0.15 * height - tier * 0.25 * height
        top = bottom - 0.4 * height
        half = (0.3 - 0.06 * tier) * height
        draw.polygon([(x - half, bottom), (x + half, bottom), (x, top)], fill=(30, 85, 55, 255))
        snow_edge = top + 0.35 * (bottom - top)
        draw.polygon([(x - 0.35 * half, snow_edge), (x + 0.35 * half, snow_edge), (x, top)], fill=SNOW)


def _draw_house(
    draw: ImageDraw.ImageDraw, x: float, base: float, width: float, snowy_roof: bool, rng: random.Random
) -> list[list[float]]:
    wall_colour, roof_colour = rng.choice(
        [((200, 60, 50), (90, 45, 35)), ((230, 215, 180), (120, 50, 40)), ((140, 160, 190), (70, 70, 80))]
    )
    half, wall = width / 2, 0.62 * width
    top = base - wall
    draw.rectangle([x - half, top, x + half, base], fill=(*wall_colour, 255))
    roof = [(x - 1.15 * half, top), (x + 1.15 * half, top), (x, top - 0.45 * width)]
    draw.polygon(roof, fill=(*roof_colour, 255))
    if snowy_roof:
        snow_edge = top - 0.2 * width
        draw.polygon([(x - 0.6 * half, snow_edge), (x + 0.6 * half, snow_edge), roof[2]], fill=SNOW)
    draw.rectangle([x + 0.15 * half, base - 0.6 * wall, x + 0.55 * half, base], fill=(85, 55, 35, 255))
    window = [x - 0.7 * half, base - 0.75 * wall, x - 0.2 * half, base - 0.4 * wall]
    draw.rectangle(window, fill=(60, 80, 110, 255))
    return [window]


def _composite_lit(below: Image.Image, layer: Image.Image, light: np.ndarray) -> Image.Image:
    """Lay the RGBA `layer` over `below`, its colours multiplied by `light` (RGB or per pixel)."""
    pixels = np.asarray(layer, dtype=np.float32)
    alpha = pixels[..., 3:] / 255.0
    out = np.asarray(below, dtype=np.float32) * (1 - alpha) + pixels[..., :3] * light * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _reflect(scene: Image.Image, waterline: int, rng: random.Random) -> Image.Image:
    """Fill the water below `waterline` with a darkened, rippled mirror image of the scene above it."""
    pixels = np.asarray(scene, dtype=np.float32).copy()
    s = pixels.shape[0]
    ys = np.arange(waterline, s)
    nearness = (ys - waterline) / (s - waterline)
    # Ripples shift each row sideways a little, more so close to the viewer.
    period, phase = rng.uniform(0.015, 0.03) * s, rng.uniform(0, 6.3)
    shift = np.round((0.003 + 0.008 * nearness) * s * np.sin(2 * math.pi * ys / period + phase)).astype(int)
    cols = np.clip(np.arange(s)[None, :] + shift[:, None], 0, s - 1)
    mirrored = pixels[(2 * waterline - 1 - ys)[:, None], cols]
    water = 0.7 * mirrored + 0.3 * WATER_TINT
    water *= (1 - 0.15 * nearness)[:, None, None]
    for _ in range(12):  # glints
        y, x, length = rng.randrange(len(ys)), rng.uniform(0, s), rng.uniform(0.03, 0.1) * s
        water[y, int(x) : int(x + length)] += 25
    pixels[waterline:] = water
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
