"""ldm.data.nearest, the memorization check: a planted copy of a training picture among
generated ones is a near-copy, fresh pictures are (almost) never, the threshold is the
percentile it claims, and the block search finds what comparing every pair finds."""

import math

import numpy as np
import pytest
from PIL import Image
from photo_like import jpeg, picture

from ldm.data import nearest as memorization
from ldm.data.dedupe import popcount
from ldm.data.errors import DataError
from ldm.data.nearest import (
    calibrate, hash_codes, hash_samples, match_generated, memorization_markdown, memorization_report,
    pairs_sheet, percentile_threshold, split_heldout,
)  # fmt: skip


def decoded(data: bytes) -> Image.Image:
    import io

    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def training():
    """60 training pictures (seeds 0-59) as (key, JPEG bytes), hashed."""
    samples = [(f"train/{n:03d}.jpg", jpeg(picture(n))) for n in range(60)]
    keys, codes, unreadable = hash_samples(samples + [("train/broken.jpg", b"not an image")])
    assert unreadable == 1 and len(keys) == 60
    return keys, codes


@pytest.fixture(scope="module")
def calibration(training):
    """Threshold from 200 real pictures that are not in the training set (seeds 1000-1199)."""
    heldout = hash_codes(decoded(jpeg(picture(1000 + n))) for n in range(200))
    return calibrate(heldout, training[1], "fresh pictures")


def test_a_planted_copy_is_a_near_copy_and_fresh_pictures_almost_never_are(training, calibration):
    original = picture(17)
    copies = {
        "resized": decoded(jpeg(original.resize((96, 72), Image.LANCZOS))),
        "recompressed": decoded(jpeg(original, 40)),
    }
    fresh = {f"fresh {n}": decoded(jpeg(picture(5000 + n))) for n in range(100)}
    generated = {**copies, **fresh}
    matches = match_generated(list(generated), hash_codes(generated.values()), *training, k=3)
    near = {m.generated for m in matches if m.distance < calibration.threshold}
    assert set(copies) <= near
    assert {m.neighbours[0][0] for m in matches if m.generated in copies} == {"train/017.jpg"}
    assert len(near - set(copies)) <= 5  # a new picture is that close about 1% of the time
    assert all(len(m.neighbours) == 3 and m.neighbours == sorted(m.neighbours, key=lambda n: n[1]) for m in matches)
    assert calibration.threshold > 18  # anything dedupe calls a copy is a near-copy
    report = memorization_report(matches, calibration, "train/", top=4)
    assert report["near_copies"] == len(near) and report["generated"] == 102
    assert report["near_copy_share"] == pytest.approx(len(near) / 102)
    assert report["closest"][0]["generated"] in copies and report["closest"][0]["near_copy"]
    assert [row["distance"] for row in report["nearest"]] == [m.distance for m in matches]
    assert {row["generated"] for row in report["nearest"]} == {m.generated for m in matches}
    assert report["calibration"]["pictures"] == 200 and report["calibration"]["share_below"] <= 0.01
    text = memorization_markdown(report)
    assert f"closer than **{calibration.threshold}**" in text and "train/017.jpg" in text
    sheet = pairs_sheet([(copies["resized"], original, "3: train/017.jpg"), (fresh["fresh 0"], None, "60: ?")], cell=64)
    assert sheet.size == (128, 2 * (64 + 14))


def test_the_threshold_is_the_percentile_of_a_known_distribution():
    # Distances of random 128-bit codes are Binomial(128, 1/2): its exact 1% quantile.
    rng = np.random.default_rng(0)
    distances = rng.binomial(128, 0.5, size=200_000)
    cdf = np.cumsum([math.comb(128, d) / 2**128 for d in range(129)])
    quantile = int(np.searchsorted(cdf, 0.01))  # the smallest d with P(D <= d) >= 1%
    threshold = percentile_threshold(distances, 1.0)
    assert threshold in (quantile, quantile + 1)
    assert np.mean(distances < threshold) <= 0.01 < np.mean(distances <= threshold)
    assert percentile_threshold(np.arange(100)[::-1], 1.0) == 1  # 1 of 100 below it
    assert percentile_threshold(np.array([7, 9]), 1.0) == 7  # too few for 1%: the closest


def test_calibration_leaves_out_held_out_pictures_that_have_a_copy_in_the_training_set(training):
    keys, codes = training
    held, rest = split_heldout(len(keys))
    assert len(held) == 6 and not set(held) & set(rest) and len(held) + len(rest) == 60
    assert (split_heldout(len(keys))[0] == held).all()  # seeded
    with_copy = np.concatenate([codes[rest][:2], codes[held]])
    found = calibrate(with_copy, codes[rest], "mixed")
    assert (found.pictures, found.with_copies) == (6, 2)
    with pytest.raises(DataError, match="every held-out picture"):
        calibrate(codes[rest][:3], codes[rest], "copies only")
    with pytest.raises(DataError, match="too few"):
        split_heldout(1)


def test_block_search_finds_the_nearest_that_comparing_every_pair_finds(monkeypatch):
    monkeypatch.setattr(memorization, "BLOCK", 7)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64)
    queries = rng.integers(0, 2**63, size=(20, 2), dtype=np.uint64)
    indices, distances = memorization.nearest(queries, codes, 4)
    every = popcount(queries[:, None, 0] ^ codes[None, :, 0]).astype(int) + popcount(queries[:, None, 1] ^ codes[None, :, 1])
    assert (distances == np.sort(every, axis=1)[:, :4]).all()
    assert (np.take_along_axis(every, indices, 1) == distances).all()
    assert memorization.nearest(queries, codes[:2], 5)[0].shape == (20, 2)  # k beyond the data: all of it
