"""Control images stored in the data (an hf column, a webdataset key) come with their
samples, cropped and flipped exactly as their images are."""

import datasets
import pytest
import torch
import webdataset as wds

from ldm.data import DataError, build_dataset

from .fixtures import RESOLUTION, encoded, folder_config, noise_image


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def saved_dataset_with_maps(tmp_path, broken_row: int | None = None):
    """Rows whose control image is the image itself (so alignment is equality); one row's map
    may be broken bytes."""
    images = [{"bytes": encoded(noise_image(seed=n), "PNG"), "path": None} for n in range(4)]
    maps = [dict(image) for image in images]
    if broken_row is not None:
        maps[broken_row] = {"bytes": b"not a picture", "path": None}
    features = datasets.Features({"image": datasets.Image(), "map": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": images, "map": maps, "text": [f"row {n}" for n in range(4)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_an_hf_control_column_is_cropped_and_flipped_with_its_image(tmp_path):
    config = folder_config(saved_dataset_with_maps(tmp_path), source="hf", control_column="map", crop="random", random_flip=True)
    dataset = build_dataset(config, seed=3)
    for epoch in range(3):  # other crops and flips each epoch
        for position in range(len(dataset)):
            sample = dataset[(epoch, position)]
            assert sample["control"].shape == (3, RESOLUTION, RESOLUTION)
            assert torch.equal(sample["control"], sample["pixels"])


def test_a_sample_whose_map_is_unreadable_is_skipped_and_counted(tmp_path):
    config = folder_config(saved_dataset_with_maps(tmp_path, broken_row=2), source="hf", control_column="map")
    dataset = build_dataset(config)
    assert sorted(sample["key"] for sample in dataset) == ["0", "1", "3"]
    assert dataset.stats.skipped == {"unreadable": 1}


def test_a_missing_control_column_or_a_source_without_columns_is_a_data_error(tmp_path):
    path = saved_dataset_with_maps(tmp_path)
    with pytest.raises(DataError, match="has no column 'depth' .*; set data.control_column"):
        build_dataset(folder_config(path, source="hf", control_column="depth"))
    with pytest.raises(DataError, match="data.control_column is read from data.source hf, not imagefolder"):
        build_dataset(folder_config(tmp_path, control_column="map"))


def test_a_webdataset_control_key_is_cropped_and_flipped_with_its_image(tmp_path):
    with wds.TarWriter(str(tmp_path / "shard-000000.tar")) as writer:
        for n in range(4):
            image = encoded(noise_image(seed=n), "PNG")
            sample = {"__key__": f"k{n}", "png": image, "txt": f"sample {n}", "control.png": image}
            if n == 3:
                del sample["control.png"]  # a sample without its map
            writer.write(sample)
    config = folder_config(str(tmp_path / "shard-000000.tar"), source="webdataset", control_key="control.png", crop="random",
                           random_flip=True, shuffle_buffer=1)  # fmt: skip
    dataset = build_dataset(config, seed=5)
    samples = list(dataset)
    assert sorted(sample["key"] for sample in samples) == ["k0", "k1", "k2"]
    assert all(torch.equal(sample["control"], sample["pixels"]) for sample in samples)
    assert dataset.stats.skipped == {"unreadable": 1}
