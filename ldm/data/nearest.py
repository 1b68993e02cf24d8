"""The memorization check: each generated image's nearest training images, and which
generated images are near-copies of one.

Distance: dedupe's (ldm.data.dedupe), the summed Hamming distance of the phash and dhash
perceptual hashes, 0-128 bits. Chosen over a learned feature distance because it is measured
(docs/data.md: it finds resized, recompressed, brightened and slightly cropped copies among
real photos with almost no false pairs), it reads any domain without pretrained weights
(none are available here), and a regurgitated training image is exactly such a copy.

Threshold: calibrated, not fixed. Real pictures that are NOT in the training set (held out)
are compared with the training set the same way; a generated image is a near-copy when its
nearest training image is closer than the `percentile`-th percentile of those distances, so
a new real picture is that close at most `percentile`% of the time. A held-out picture with
a copy in the training set (within dedupe's threshold) is not a new picture: it is left out
of the calibration and counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import numpy as np
from PIL import Image, ImageDraw

from ldm.data.decode import ImageSource, decode_image
from ldm.data.dedupe import BLOCK, DEFAULT_THRESHOLD, fingerprints, image_hashes, summed_distances
from ldm.data.errors import DataError

DISTANCE = "dedupe's: phash+dhash (imagehash, 2 x 64 bits), summed Hamming distance 0-128"
PERCENTILE = 1.0  # a new real picture is closer than the threshold at most 1% of the time
HELDOUT_FRACTION = 0.1  # of DATA, held out for the calibration when no held-out folder is given
NEIGHBOURS = 3  # training images listed per generated image


def hash_codes(images: Iterable[Image.Image]) -> np.ndarray:
    """(N, 2) uint64 (phash, dhash) of decoded images: what dedupe compares."""
    return np.array([image_hashes(image) for image in images], dtype=np.uint64).reshape(-1, 2)


def hash_samples(samples: Iterable[tuple[str, ImageSource]]) -> tuple[list[str], np.ndarray, int]:
    """(keys, (N, 2) codes, unreadable count) of a source's readable images."""
    keys, codes, unreadable = [], [], 0
    for found in fingerprints(samples):
        if found.skipped:
            unreadable += 1
            continue
        keys.append(found.key)
        codes.append(found.hashes)
    return keys, np.array(codes, dtype=np.uint64).reshape(-1, 2), unreadable


def nearest(queries: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest codes of each query, closest first: (Q, k) indices and distances."""
    k = min(k, len(codes))
    indices, distances = [], []
    for start in range(0, len(queries), BLOCK):
        rows = queries[start : start + BLOCK]
        total = summed_distances(rows, codes)  # (B, N)
        part = np.argpartition(total, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(total, part, 1), axis=1, kind="stable")
        chosen = np.take_along_axis(part, order, 1)
        indices.append(chosen)
        distances.append(np.take_along_axis(total, chosen, 1))
    return np.concatenate(indices).reshape(-1, k), np.concatenate(distances).reshape(-1, k)


def percentile_threshold(distances: np.ndarray, percentile: float = PERCENTILE) -> int:
    """The largest distance t for which at most `percentile`% of `distances` are below t."""
    ordered = np.sort(np.asarray(distances))
    return int(ordered[min(int(percentile / 100 * len(ordered)), len(ordered) - 1)])


@dataclass
class Calibration:
    threshold: int  # a generated image whose nearest training image is closer is a near-copy
    percentile: float
    heldout: str  # where the held-out pictures came from
    pictures: int  # held-out pictures the threshold was read from
    with_copies: int  # held-out pictures left out: a copy of them is in the training set
    share_below: float  # of those pictures' distances below the threshold (<= percentile / 100)
    median: float  # a typical new picture's distance, for scale


def calibrate(heldout: np.ndarray, reference: np.ndarray, described: str, percentile: float = PERCENTILE) -> Calibration:
    """The threshold from held-out codes' nearest distances to the reference (training) codes."""
    _, found = nearest(heldout, reference, 1)
    found = found[:, 0]
    new = found[found > DEFAULT_THRESHOLD]
    if not len(new):
        raise DataError(f"every held-out picture ({len(found)}) has a copy in the training data: nothing to calibrate on")
    threshold = percentile_threshold(new, percentile)
    share = float(np.mean(new < threshold))
    return Calibration(threshold, percentile, described, len(new), len(found) - len(new), share, float(np.median(new)))


def split_heldout(count: int, fraction: float = HELDOUT_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, reference) indices: a seeded `fraction` of `count` images against the rest."""
    if count < 2:
        raise DataError(f"{count} training image: too few to hold some out for the calibration (give a held-out folder)")
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(1, round(fraction * count)), count - 1)
    return np.sort(order[:held]), np.sort(order[held:])


@dataclass
class Match:
    generated: str
    neighbours: list[tuple[str, int]]  # (training key, distance), closest first

    @property
    def distance(self) -> int:
        return self.neighbours[0][1]


def match_generated(keys: list[str], codes: np.ndarray, train_keys: list[str], train_codes: np.ndarray, k: int = NEIGHBOURS) -> list[Match]:
    """Each generated image with its k nearest training images, the closest matches first."""
    indices, distances = nearest(codes, train_codes, k)
    matches = [
        Match(key, [(train_keys[j], int(d)) for j, d in zip(row, dist)]) for key, row, dist in zip(keys, indices, distances)
    ]
    return sorted(matches, key=lambda m: m.distance)


def memorization_report(matches: list[Match], calibration: Calibration, data: str, top: int = 8) -> dict:
    copies = [m for m in matches if m.distance < calibration.threshold]
    return {
        "data": data,
        "distance": DISTANCE,
        "threshold": calibration.threshold,
        "calibration": asdict(calibration),
        "generated": len(matches),
        "near_copies": len(copies),
        "near_copy_share": len(copies) / len(matches) if matches else 0.0,
        "near_copy_images": [m.generated for m in copies],
        # every generated image's nearest training image, closest first: the whole distribution
        "nearest": [{"generated": m.generated, "training": m.neighbours[0][0], "distance": m.distance} for m in matches],
        "closest": [
            {"generated": m.generated, "near_copy": m.distance < calibration.threshold,
             "nearest": [{"training": key, "distance": d} for key, d in m.neighbours]}
            for m in matches[:top]
        ],  # fmt: skip
    }


def memorization_markdown(report: dict) -> str:
    c = report["calibration"]
    lines = [
        "## Memorization",
        "",
        f"Training data: {report['data']}. Distance: {report['distance']}.",
        f"Threshold: a generated image is a near-copy when its nearest training image is closer than "
        f"**{report['threshold']}**: the {c['percentile']:g}th percentile of the nearest-training-image distances of "
        f"{c['pictures']} held-out real pictures ({c['heldout']}; median {c['median']:g}; {c['share_below']:.1%} of them "
        f"below it; {c['with_copies']} left out, a copy of them is in the training data).",
        "",
        f"**Near-copies: {report['near_copies']} of {report['generated']} generated images ({report['near_copy_share']:.1%}).**",
        "",
        "| generated | nearest training images (distance) | near-copy |",
        "|---|---|---|",
    ]
    for row in report["closest"]:
        nearest_text = ", ".join(f"{n['training']} ({n['distance']})" for n in row["nearest"])
        lines.append(f"| {row['generated']} | {nearest_text} | {'yes' if row['near_copy'] else 'no'} |")
    return "\n".join(lines) + "\n"


def read_images(samples: Iterable[tuple[str, ImageSource]], keys: set[str]) -> dict[str, Optional[Image.Image]]:
    """The decoded images of `keys` from a (second) pass over a source's samples."""
    found: dict[str, Optional[Image.Image]] = {}
    for key, source in samples:
        if key in keys:
            found[key] = decode_image(source).image
            if len(found) == len(keys):
                break
    return found


def pairs_sheet(pairs: list[tuple[Image.Image, Optional[Image.Image], str]], cell: int = 160) -> Image.Image:
    """Rows of generated image | its nearest training image, each row captioned."""
    caption = 14
    sheet = Image.new("RGB", (2 * cell, max(1, len(pairs)) * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (generated, training, label) in enumerate(pairs):
        top = row * (cell + caption)
        for column, image in enumerate((generated, training)):
            if image is not None:
                shown = image.convert("RGB")
                shown.thumbnail((cell, cell))
                sheet.paste(shown, (column * cell, top))
        draw.text((2, top + cell), label, fill="black")
    return sheet
