"""make_batches on map-style datasets: the one path ldm-train reads image folders, HF
datasets and cached latents through."""

import pytest

from ldm.data import DataError, DataStats, build_dataset, make_batches
from ldm.data import indexed
from ldm.data.stats import COUNTERS

from .fixtures import RESOLUTION, folder_config, write_image, noise_image


def keys(batches) -> list[list[str]]:
    return [batch["key"] for batch in batches]


def test_batches_collate_pixels_captions_and_keys(sidecar_folder):
    batch = next(make_batches(build_dataset(folder_config(sidecar_folder)), batch_size=4).epoch_batches())
    assert batch["pixels"].shape == (4, 3, RESOLUTION, RESOLUTION)
    assert len(batch["caption"]) == len(batch["key"]) == 4
    assert all(isinstance(c, str) for c in batch["caption"])


def test_each_epoch_is_a_new_order_of_every_sample_and_seek_goes_back(sidecar_folder):
    batches = make_batches(build_dataset(folder_config(sidecar_folder)), batch_size=4, seed=0)
    first, second = keys(batches.epoch_batches()), keys(batches.epoch_batches())
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and len(set(sum(first, []))) == 12
    assert first != second and batches.position() == {"epoch": 2, "batch": 0}
    batches.seek({"epoch": 0, "batch": 0})
    assert keys(batches.epoch_batches()) == first


def counting_decodes(monkeypatch) -> list:
    decoded = []
    original = indexed.decode_image

    def counting(source, min_size):
        decoded.append(source)
        return original(source, min_size=min_size)

    monkeypatch.setattr(indexed, "decode_image", counting)
    return decoded


def test_resume_mid_epoch_continues_exactly_and_decodes_only_what_follows(sidecar_folder, monkeypatch):
    config = folder_config(sidecar_folder, crop="random", random_flip=True)
    whole = make_batches(build_dataset(config, seed=3), batch_size=2, seed=3)
    stream = iter(whole)
    expected = [next(stream) for _ in range(9)]  # crosses into the second epoch (6 batches each)
    resumed = make_batches(build_dataset(config, seed=3), batch_size=2, seed=3)
    resumed.seek({"epoch": 0, "batch": 4})
    decoded = counting_decodes(monkeypatch)
    stream = iter(resumed)
    again = [next(stream) for _ in range(5)]
    assert keys(again) == keys(expected[4:])
    assert all((a["pixels"] == b["pixels"]).all() for a, b in zip(again, expected[4:]))
    assert len(decoded) == 10  # the 5 batches trained on, nothing before them


def resumed_continuation(make_batches_, taken: int, more: int = 2) -> tuple[list, list]:
    """(the `more` batches after the first `taken` of one batcher, what a new batcher seeked to
    the position the first had after `taken` batches gives): what a checkpoint saves, and resumes."""
    whole = iter(make_batches_())
    expected = [next(whole) for _ in range(taken + more)][taken:]
    batches = make_batches_()
    stream = iter(batches)
    for _ in range(taken):
        next(stream)
    resumed = make_batches_()
    resumed.seek(batches.position())
    stream = iter(resumed)
    return keys(expected), keys(next(stream) for _ in range(more))


@pytest.mark.parametrize("taken", [1, 4, 6, 7])  # 6 batches an epoch: mid-epoch, its end, into the next
def test_the_position_after_n_batches_resumes_with_batch_n_plus_one(sidecar_folder, taken):
    config = folder_config(sidecar_folder)
    expected, resumed = resumed_continuation(lambda: make_batches(build_dataset(config, seed=1), batch_size=2, seed=1), taken)
    assert resumed == expected


def test_two_processes_with_batch_b_read_what_one_reads_with_2b(sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder))
    one = keys(make_batches(dataset, batch_size=4, seed=5).epoch_batches())
    ranks = [keys(make_batches(dataset, batch_size=2, seed=5, rank=r, world_size=2).epoch_batches()) for r in range(2)]
    assert one == [a + b for a, b in zip(*ranks)]


def test_bad_images_are_dropped_from_their_batch_and_counted_once(messy_folder):
    dataset = build_dataset(folder_config(messy_folder))
    batches = make_batches(dataset, batch_size=4, num_workers=2)
    for _ in range(2):  # the second epoch counts nothing twice
        read = keys(batches.epoch_batches())
        assert len(read) == 2 and sum(len(k) for k in read) == 5  # 8 files, 3 of them bad
    assert dataset.stats.seen == 8
    assert dataset.stats.skipped == {"unreadable": 1, "truncated": 1, "too small": 1}


def test_a_dataset_of_only_bad_images_is_a_data_error_with_the_counts(tmp_path):
    for n in range(4):
        (tmp_path / f"{n}.jpg").write_bytes(b"not an image")
        (tmp_path / f"{n}.txt").write_text("a caption")
    write_image(tmp_path / "small.png", noise_image(4, 4)).with_suffix(".txt").write_text("a caption")
    batches = make_batches(build_dataset(folder_config(tmp_path)), batch_size=1)
    with pytest.raises(DataError, match=r"5 images, 0 converted, 5 skipped \(4 unreadable, 1 too small\)"):
        next(iter(batches))


def test_fewer_samples_than_one_global_batch_is_a_data_error(sidecar_folder):
    with pytest.raises(DataError, match="12 samples, fewer than one global batch"):
        make_batches(build_dataset(folder_config(sidecar_folder)), batch_size=8, world_size=2)


def test_stats_totals_round_trip_and_summary():
    stats = DataStats()
    stats.record()
    stats.record(converted="CMYK->RGB")
    stats.record(skipped="no caption")
    summed = DataStats.from_totals(stats.totals() * 2)  # e.g. summed over two processes
    assert summed.totals().shape == (len(COUNTERS),)
    assert summed.summary() == "6 images, 2 converted (2 CMYK->RGB), 2 skipped (2 no caption)"
    assert DataStats().summary() == "0 images, 0 converted, 0 skipped"
