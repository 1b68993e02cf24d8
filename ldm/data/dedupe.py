"""Exact and near duplicate images among a source's samples, and which copy of each to keep.

  exact  the same file bytes (sha256)
  near   the same picture resized, recompressed, slightly cropped or brightened: the summed
         Hamming distance of two 64-bit perceptual hashes (imagehash's DCT `phash` and
         gradient `dhash`) is at most `threshold` of 128 bits. Two hashes summed separate
         copies from distinct photos better than either alone (docs/data.md: measured
         recall per kind of copy, and false pairs among 9,600 real photos).
  flips  optionally (flips=True) a mirror image counts too: its hashes are compared as well.

Every pair is compared through the hashes alone, 1024 rows at a time with numpy popcounts
(dhash only where phash is already close), so 50,000 images are 1.25e9 pairs, seconds.
Groups form around the copy to keep: images in keep order (KEEP_RULE) each take the
not-yet-grouped images within the threshold of themselves, so every member of a group is
within the threshold of its kept image (no chains of ever less similar images).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import imagehash
import numpy as np
from PIL import Image, ImageOps

from ldm.data.decode import DECODE_ERRORS, ImageSource, decode_image

# Of 128 bits: 3 false pairs among 47 M pairs of distinct real photos (6e-8 a pair, so ~80 among
# 50,000 images); every resized, recompressed, brightened and 2%-cropped copy (docs/data.md).
DEFAULT_THRESHOLD = 18
HASH_SIZE = 8  # 8 x 8 = 64 bits per hash
PREVIEW = 64  # JPEGs are decoded at a DCT scale with the shorter side >= this: hashes read 32 x 32
BLOCK = 1024  # query rows per popcount block: BLOCK x N bytes of distances at a time
KEEP_RULE = "the most pixels, then the largest file (the least compressed), then the first in source order"


@dataclass
class Fingerprint:
    """What the comparison needs of one image; `skipped` says why an image has no hashes."""

    key: str
    digest: str = ""  # sha256 of the file bytes
    pixels: int = 0  # width x height as stored
    size: tuple[int, int] = (0, 0)
    file_bytes: int = 0
    hashes: tuple[int, int] = (0, 0)  # (phash, dhash)
    mirrored: tuple[int, int] = (0, 0)  # the mirror image's (phash, dhash), when flips are compared
    skipped: Optional[str] = None


def _hash_bits(value: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(value.hash.flatten()).tobytes(), "big")


def image_hashes(image: Image.Image) -> tuple[int, int]:
    return _hash_bits(imagehash.phash(image, HASH_SIZE)), _hash_bits(imagehash.dhash(image, HASH_SIZE))


def read_bytes(source: ImageSource) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def fingerprint(key: str, source: ImageSource, flips: bool = False) -> Fingerprint:
    """The file's digest, size and perceptual hashes; an unreadable one says why (`skipped`)."""
    try:
        data = read_bytes(source)
    except OSError:
        return Fingerprint(key, skipped="unreadable")
    decoded = decode_image(data, draft=PREVIEW)
    if decoded.image is None:
        return Fingerprint(key, skipped=decoded.skipped)
    try:
        with Image.open(io.BytesIO(data)) as header:  # the stored size (the preview is smaller)
            width, height = header.size
    except DECODE_ERRORS:
        return Fingerprint(key, skipped="unreadable")
    mirrored = image_hashes(ImageOps.mirror(decoded.image)) if flips else (0, 0)
    return Fingerprint(
        key, hashlib.sha256(data).hexdigest(), width * height, (width, height), len(data), image_hashes(decoded.image), mirrored
    )


# ----------------------------------------------------------------------------- pairs


_BYTE_BITS = np.array([bin(n).count("1") for n in range(256)], dtype=np.uint8)


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return _BYTE_BITS[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1, dtype=np.uint8)


def summed_distances(rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(B, N) int32: the summed phash + dhash Hamming distance of each of `rows` (B, 2) to each of `codes` (N, 2)."""
    total = popcount(rows[:, None, 0] ^ codes[None, :, 0]).astype(np.int32)
    return total + popcount(rows[:, None, 1] ^ codes[None, :, 1])


def near_pairs(codes: np.ndarray, threshold: int, queries: Optional[np.ndarray] = None) -> Iterator[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose summed distance of codes (N, 2) uint64 is at most
    `threshold`. With `queries` (N, 2) (the mirror images' codes): queries[i] against codes[j]
    for every j != i, each pair once per direction."""
    count = len(codes)
    for start in range(0, count, BLOCK):
        rows = (codes if queries is None else queries)[start : start + BLOCK]
        first = start if queries is None else 0  # the self-comparison: only the upper triangle
        close = popcount(rows[:, None, 0] ^ codes[None, first:, 0])  # (B, N - first) phash distances
        i, j = np.nonzero(close <= threshold)
        j = j + first
        i = i + start
        keep = (i < j) if queries is None else (i != j)
        i, j = i[keep], j[keep]
        total = close[i - start, j - first].astype(np.int32) + popcount(rows[i - start, 1] ^ codes[j, 1])
        within = total <= threshold
        yield from zip(i[within].tolist(), j[within].tolist(), total[within].tolist())


# ----------------------------------------------------------------------------- groups


@dataclass
class Duplicate:
    key: str
    kind: str  # "exact" | "near"
    distance: int  # summed hash distance to the kept image, 0..128
    mirrored: bool = False
    size: tuple[int, int] = (0, 0)


@dataclass
class Group:
    kept: str
    size: tuple[int, int]
    duplicates: list[Duplicate] = field(default_factory=list)


def keep_order(prints: list[Fingerprint]) -> list[int]:
    """Indices of `prints` in KEEP_RULE's order."""
    return sorted(range(len(prints)), key=lambda i: (-prints[i].pixels, -prints[i].file_bytes, i))


def _neighbours(prints: list[Fingerprint], threshold: int, flips: bool) -> dict[int, dict[int, tuple[int, bool]]]:
    """i -> {j: (distance, mirrored)}, both ways, exact copies at distance 0."""
    found: dict[int, dict[int, tuple[int, bool]]] = {}

    def link(i: int, j: int, distance: int, mirrored: bool) -> None:
        if distance < found.get(i, {}).get(j, (threshold + 1, False))[0]:
            found.setdefault(i, {})[j] = found.setdefault(j, {})[i] = (distance, mirrored)

    codes = np.array([p.hashes for p in prints], dtype=np.uint64).reshape(-1, 2)
    for i, j, distance in near_pairs(codes, threshold):
        link(i, j, distance, False)
    if flips:
        mirrored = np.array([p.mirrored for p in prints], dtype=np.uint64).reshape(-1, 2)
        for i, j, distance in near_pairs(codes, threshold, queries=mirrored):
            link(i, j, distance, True)
    by_digest: dict[str, int] = {}
    for i, p in enumerate(prints):
        first = by_digest.setdefault(p.digest, i)
        if first != i:
            found.setdefault(i, {})[first] = found.setdefault(first, {})[i] = (0, False)
    return found


def group_duplicates(prints: list[Fingerprint], threshold: int = DEFAULT_THRESHOLD, flips: bool = False) -> list[Group]:
    """Groups of copies among readable fingerprints, each around the image KEEP_RULE keeps."""
    neighbours = _neighbours(prints, threshold, flips)
    grouped: set[int] = set()
    groups = []
    for i in keep_order(prints):
        if i in grouped:
            continue
        grouped.add(i)
        members = sorted((j for j in neighbours.get(i, {}) if j not in grouped), key=lambda j: (neighbours[i][j][0], j))
        if not members:
            continue
        grouped.update(members)
        kept = prints[i]
        group = Group(kept.key, kept.size)
        for j in members:
            distance, mirrored = neighbours[i][j]
            kind = "exact" if prints[j].digest == kept.digest else "near"
            group.duplicates.append(Duplicate(prints[j].key, kind, distance, mirrored, prints[j].size))
        groups.append(group)
    return groups


def fingerprints(samples: Iterable[tuple[str, ImageSource]], flips: bool = False, pool=None) -> Iterator[Fingerprint]:
    """fingerprint() of each (key, source), in order; `pool` (a multiprocessing.Pool) spreads
    the decoding over processes, a bounded batch at a time (a stream may outgrow memory)."""
    if pool is None:
        for key, source in samples:
            yield fingerprint(key, source, flips)
        return
    batch: list[tuple[str, ImageSource, bool]] = []
    for key, source in samples:
        batch.append((key, source, flips))
        if len(batch) == 16 * BLOCK:
            yield from pool.imap(_fingerprint_args, batch, chunksize=16)
            batch = []
    yield from pool.imap(_fingerprint_args, batch, chunksize=16)


def _fingerprint_args(args: tuple[str, ImageSource, bool]) -> Fingerprint:
    return fingerprint(*args)


# ----------------------------------------------------------------------------- report


def excluded_keys(groups: list[Group], prints: list[Fingerprint]) -> list[str]:
    """Every group's duplicates (not the kept images), in source order: a data.exclude list."""
    order = {p.key: i for i, p in enumerate(prints)}
    return sorted((d.key for g in groups for d in g.duplicates), key=order.__getitem__)


def dedupe_report(source: str, prints: list[Fingerprint], groups: list[Group], threshold: int, flips: bool) -> dict:
    """The JSON report: settings, counts, the skipped images and the groups."""
    duplicates = [d for g in groups for d in g.duplicates]
    return {
        "source": source,
        "images": len(prints),
        "skipped": {p.key: p.skipped for p in prints if p.skipped},
        "hashes": "phash+dhash (imagehash, 2 x 64 bits); distance: the summed Hamming distance, 0-128",
        "threshold": threshold,
        "flips": flips,
        "keep_rule": KEEP_RULE,
        "groups": len(groups),
        "duplicates": len(duplicates),
        "exact": sum(d.kind == "exact" for d in duplicates),
        "near": sum(d.kind == "near" for d in duplicates),
        "duplicate_groups": [
            {
                "kept": g.kept,
                "size": "x".join(map(str, g.size)),
                "others": [
                    {"key": d.key, "kind": d.kind, "distance": d.distance, "mirrored": d.mirrored, "size": "x".join(map(str, d.size))}
                    for d in g.duplicates
                ],
            }
            for g in groups
        ],
    }
