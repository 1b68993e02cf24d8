import pytest

from ldm.data import DataStats, build_dataset, make_loader
from ldm.data.stats import COUNTERS

from .fixtures import RESOLUTION, folder_config


def test_batches_collate_pixels_captions_and_keys(sidecar_folder):
    loader = make_loader(build_dataset(folder_config(sidecar_folder)), batch_size=4, num_workers=0, seed=0)
    batch = next(iter(loader))
    assert batch["pixels"].shape == (4, 3, RESOLUTION, RESOLUTION)
    assert len(batch["caption"]) == len(batch["key"]) == 4
    assert all(isinstance(c, str) for c in batch["caption"])


@pytest.mark.parametrize("workers", [0, 2])
def test_each_pass_is_a_new_epoch_and_set_epoch_restarts(sidecar_folder, workers):
    loader = make_loader(build_dataset(folder_config(sidecar_folder)), batch_size=12, num_workers=workers, seed=0)
    first, second = (next(iter(loader))["key"] for _ in range(2))
    assert sorted(first) == sorted(second) and first != second
    loader.set_epoch(0)
    assert next(iter(loader))["key"] == first


def test_worker_counts_reach_the_main_process(messy_folder):
    dataset = build_dataset(folder_config(messy_folder))
    for _ in range(2):  # two epochs with persistent workers: counted once
        list(make_loader(dataset, batch_size=2, num_workers=2, seed=0))
    assert dataset.stats.seen == 8
    assert dataset.stats.skipped == {"unreadable": 1, "truncated": 1, "too small": 1}


def test_stats_totals_round_trip_and_summary():
    stats = DataStats()
    stats.record()
    stats.record(converted="CMYK->RGB")
    stats.record(skipped="no caption")
    summed = DataStats.from_totals(stats.totals() * 2)  # e.g. summed over two processes
    assert summed.totals().shape == (len(COUNTERS),)
    assert summed.summary() == "6 images, 2 converted (2 CMYK->RGB), 2 skipped (2 no caption)"
    assert DataStats().summary() == "0 images, 0 converted, 0 skipped"
