"""ldm.data.dedupe on generated pictures: planted copies are grouped with their original,
distinct pictures are not, the kept copy follows the rule, and the pair search over hash
blocks finds exactly what comparing every pair finds."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from photo_like import jpeg, picture

from ldm.data import dedupe
from ldm.data.dedupe import dedupe_report, excluded_keys, fingerprint, group_duplicates, near_pairs, popcount


def planted(original: Image.Image) -> dict[str, bytes]:
    width, height = original.size
    return {
        "resized": jpeg(original.resize((width // 2, height // 2), Image.LANCZOS)),
        "recompressed": jpeg(original, 35),
        "cropped": jpeg(original.crop((3, 2, width - 1, height - 1))),  # ~2% off the edges
        "brighter": jpeg(ImageEnhance.Brightness(original).enhance(1.06)),
    }


@pytest.fixture(scope="module")
def collection():
    """20 distinct pictures (p00..p19) and copies of p03 and p07; an exact copy of p11."""
    items = {f"p{n:02d}": jpeg(picture(n), 95) for n in range(20)}  # the largest files: the ones kept
    for n in (3, 7):
        items.update({f"p{n:02d}-{kind}": data for kind, data in planted(picture(n)).items()})
    items["p11-exact"] = items["p11"]
    items["p05-mirrored"] = jpeg(ImageOps.mirror(picture(5)))
    return items


def groups_of(items: dict[str, bytes], **settings) -> dict[str, set[str]]:
    prints = [fingerprint(key, data, settings.get("flips", False)) for key, data in items.items()]
    return {g.kept: {d.key for d in g.duplicates} for g in group_duplicates(prints, **settings)}


def test_planted_copies_are_grouped_with_their_original_and_distinct_pictures_are_not(collection):
    groups = groups_of(collection)
    kinds = ("resized", "recompressed", "cropped", "brighter")
    copies = {n: {f"p{n:02d}-{kind}" for kind in kinds} for n in (3, 7)}
    assert groups == {"p03": copies[3], "p07": copies[7], "p11": {"p11-exact"}}


def test_mirror_images_count_only_with_flips(collection):
    assert groups_of(collection, flips=True)["p05"] == {"p05-mirrored"}


def test_kinds_distances_and_the_kept_copy(collection):
    big = jpeg(picture(3).resize((320, 240), Image.LANCZOS), 95)
    items = {"a-small": collection["p03-resized"], "b": collection["p03"], "c-big": big, "d-same": big}
    prints = [fingerprint(key, data) for key, data in items.items()]
    [group] = group_duplicates(prints)
    assert group.kept == "c-big" and group.size == (320, 240)  # the most pixels
    others = {d.key: d for d in group.duplicates}
    assert others["d-same"].kind == "exact" and others["d-same"].distance == 0
    assert others["b"].kind == others["a-small"].kind == "near" and 0 <= others["b"].distance <= dedupe.DEFAULT_THRESHOLD
    assert excluded_keys([group], prints) == ["a-small", "b", "d-same"]  # source order


def test_of_two_copies_of_one_size_the_least_compressed_is_kept():
    image = picture(9)
    [group] = group_duplicates([fingerprint("q40", jpeg(image, 40)), fingerprint("q95", jpeg(image, 95))])
    assert group.kept == "q95" and [d.key for d in group.duplicates] == ["q40"]


def test_the_report_names_settings_counts_groups_and_unreadable_images(collection):
    items = {**collection, "broken.jpg": b"not an image"}
    prints = [fingerprint(key, data) for key, data in items.items()]
    readable = [p for p in prints if not p.skipped]
    groups = group_duplicates(readable)
    report = dedupe_report("test", prints, groups, dedupe.DEFAULT_THRESHOLD, False)
    assert report["images"] == len(items) and report["skipped"] == {"broken.jpg": "unreadable"}
    assert (report["groups"], report["duplicates"], report["exact"], report["near"]) == (3, 9, 1, 8)
    first = report["duplicate_groups"][0]
    assert set(first) == {"kept", "size", "others"} and first["size"] == "160x120"
    assert set(first["others"][0]) == {"key", "kind", "distance", "mirrored", "size"}


def some_bits(rng, count: int) -> int:
    return sum(1 << int(bit) for bit in rng.choice(64, count, replace=False))


def test_block_search_finds_what_comparing_every_pair_finds(monkeypatch):
    monkeypatch.setattr(dedupe, "BLOCK", 7)  # several blocks, a partial last one
    rng = np.random.default_rng(0)
    originals = [[some_bits(rng, 32) for _ in range(2)] for _ in range(10)]
    copies = [[h ^ some_bits(rng, int(rng.integers(0, 9))) for h in originals[n % 10]] for n in range(40)]
    codes = np.array(originals + copies, dtype=np.uint64)  # (50, 2)
    brute = {(i, j, int(popcount(codes[i] ^ codes[j]).sum())) for i in range(len(codes)) for j in range(i + 1, len(codes))}
    found = set(near_pairs(codes, 12))
    assert found == {pair for pair in brute if pair[2] <= 12}
    assert len(found) > 20 and any(pair[2] > 6 for pair in found)


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    values = np.array([0, 1, 2**64 - 1, 0xF0F0], dtype=np.uint64)
    expected = popcount(values).tolist()
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert popcount(values).tolist() == expected == [0, 1, 64, 8]
