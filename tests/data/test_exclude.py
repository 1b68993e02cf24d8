"""data.exclude: every source skips the listed samples and counts them; a name that matches
no sample is counted, a list of which nothing matches is a one-line error; without a list
nothing changes, and with one a resumed or split read is still exact."""

import datasets
import pytest

from ldm.data import DataError, build_dataset, make_batches
from ldm.data.exclude import read_exclusion_list, write_exclusion_list

from .fixtures import encoded, folder_config, noise_image
from .test_batches import keys, resumed_continuation
from .test_webdataset_source import shard_config, write_shards


def exclusion(tmp_path, *names: str):
    path = tmp_path / "exclude.txt"
    write_exclusion_list(path, list(names))
    return str(path)


def read_keys(dataset) -> set[str]:
    return {sample["key"] for sample in dataset}


def test_an_image_folder_skips_the_listed_paths_and_says_so(sidecar_folder, tmp_path):
    listed = exclusion(tmp_path, "part0/img00.jpg", "part1/img05.jpg", "part1/gone.jpg")
    dataset = build_dataset(folder_config(sidecar_folder, exclude=listed))
    assert len(dataset) == 10 and not {"part0/img00.jpg", "part1/img05.jpg"} & read_keys(dataset)
    assert dataset.stats.skipped == {"excluded": 2}
    assert dataset.split_summary(0) == (
        f"12 samples: 10 for training, 0 held out for validation (data.validation: 0), "
        f"2 excluded (data.exclude {listed}; 1 name in it matches no sample)"
    )


def test_excluded_samples_are_in_neither_split(sidecar_folder, tmp_path):
    config = folder_config(sidecar_folder, validation=2)
    held_out = read_keys(build_dataset(config, split="validation"))
    config.exclude = exclusion(tmp_path, *sorted(held_out))
    train, validation = (read_keys(build_dataset(config, split=split)) for split in ("train", "validation"))
    assert not (train | validation) & held_out and len(train) == 8 and len(validation) == 2
    assert build_dataset(config).split_summary(2).startswith("12 samples: 8 for training, 2 held out for validation")


def test_without_a_list_the_samples_and_the_cache_key_are_unchanged(sidecar_folder, tmp_path):
    plain = build_dataset(folder_config(sidecar_folder))
    empty = build_dataset(folder_config(sidecar_folder, exclude=exclusion(tmp_path)))
    assert plain.indices == list(range(12)) == empty.indices
    assert "exclude" not in plain.describe() and plain.describe() != empty.describe()


def test_a_list_that_matches_nothing_or_is_missing_is_one_line(sidecar_folder, tmp_path):
    with pytest.raises(DataError, match=r"none of the 2 names in data.exclude .* is a sample of this data \(e.g. 'img00.jpg'\)"):
        build_dataset(folder_config(sidecar_folder, exclude=exclusion(tmp_path, "img00.jpg", "other/img01.jpg")))
    with pytest.raises(DataError, match="data.exclude does not exist"):
        build_dataset(folder_config(sidecar_folder, exclude=str(tmp_path / "missing.txt")))
    with pytest.raises(DataError, match="data.exclude is a folder"):
        build_dataset(folder_config(sidecar_folder, exclude=str(tmp_path)))


def test_the_list_is_one_key_per_line_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.jpg\n\n  \nsub/b c.jpg\r\n")
    assert read_exclusion_list(str(path)).names == {"a.jpg", "sub/b c.jpg"}
    with pytest.raises(DataError, match="one key per line"):
        write_exclusion_list(path, ["two\nlines"])


def test_an_hf_dataset_skips_the_listed_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    images = [{"bytes": encoded(noise_image(seed=n), "PNG"), "path": None} for n in range(5)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images, "text": [f"row {n}" for n in range(5)]}, features=features).save_to_disk(
        str(tmp_path / "saved")
    )
    dataset = build_dataset(folder_config(tmp_path / "saved", source="hf", exclude=exclusion(tmp_path, "1", "3")))
    assert read_keys(dataset) == {"0", "2", "4"} and dataset.stats.skipped == {"excluded": 2}


def test_webdataset_shards_skip_the_listed_keys_as_they_stream(tmp_path):
    pattern = write_shards(tmp_path / "shards")
    dataset = build_dataset(shard_config(pattern, exclude=exclusion(tmp_path, "s0-01", "s3-04", "elsewhere")))
    found = read_keys(dataset)
    assert len(found) == 18 and not {"s0-01", "s3-04"} & found
    assert dataset.stats.skipped == {"excluded": 2}
    assert "exclude" in dataset.describe()


@pytest.mark.parametrize("taken", [1, 4, 5])  # 5 batches an epoch: mid-epoch, its end, into the next
def test_a_read_with_a_list_resumes_exactly(sidecar_folder, tmp_path, taken):
    config = folder_config(sidecar_folder, exclude=exclusion(tmp_path, "part0/img02.jpg", "part1/img07.jpg"))
    expected, resumed = resumed_continuation(lambda: make_batches(build_dataset(config, seed=1), batch_size=2, seed=1), taken)
    assert resumed == expected and not {"part0/img02.jpg", "part1/img07.jpg"} & set(sum(expected, []))


def test_two_processes_split_what_one_reads_and_the_skips_are_counted_once(sidecar_folder, tmp_path):
    config = folder_config(sidecar_folder, exclude=exclusion(tmp_path, "part0/img00.jpg", "part0/img04.jpg"))
    one = keys(make_batches(build_dataset(config), batch_size=4, seed=5).epoch_batches())
    datasets_ = [build_dataset(config, rank=r, world_size=2) for r in range(2)]
    ranks = [keys(make_batches(d, batch_size=2, seed=5, rank=r, world_size=2).epoch_batches()) for r, d in enumerate(datasets_)]
    assert one == [a + b for a, b in zip(*ranks)]
    assert [d.stats.skipped for d in datasets_] == [{"excluded": 2}, {}]  # summed over processes: 2
