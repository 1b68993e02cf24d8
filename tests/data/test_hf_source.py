import datasets
import pytest

from ldm.data import DataError, build_dataset

from .fixtures import RESOLUTION, encoded, folder_config, messy_images, noise_image


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path, monkeypatch):
    """load_dataset converts data files into an Arrow cache: keep it out of ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture
def saved_dataset(tmp_path):
    """A datasets.Dataset with an Image feature, saved with save_to_disk: five good images
    and a truncated one."""
    images = [{"bytes": encoded(noise_image(seed=n), "PNG"), "path": None} for n in range(5)]
    images.append({"bytes": messy_images()["truncated.png"][0], "path": None})
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"image": images, "caption": [f"row {n}" for n in range(6)]}, features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved", dataset


def test_saved_dataset_rows_map_to_their_captions(saved_dataset):
    path, _ = saved_dataset
    dataset = build_dataset(folder_config(path, source="hf", caption_column="caption"))
    samples = {s["key"]: s for s in dataset}
    assert set(samples) == {"0", "1", "2", "3", "4"}
    assert samples["3"]["caption"] == "row 3"
    assert samples["3"]["pixels"].shape == (3, RESOLUTION, RESOLUTION)
    assert dataset.stats.skipped == {"truncated": 1} and dataset.stats.seen == 6


def test_parquet_files_are_read_by_extension(saved_dataset, tmp_path):
    _, dataset = saved_dataset
    dataset.to_parquet(str(tmp_path / "part-0.parquet"))
    config = folder_config(tmp_path / "part-0.parquet", source="hf", caption_column="caption")
    assert {s["key"]: s["caption"] for s in build_dataset(config)}["4"] == "row 4"


def test_validation_rows_are_disjoint_from_training_rows(saved_dataset):
    path, _ = saved_dataset
    config = folder_config(path, source="hf", caption_column="caption", validation=2)
    train = {s["key"] for s in build_dataset(config)}
    validation = {s["key"] for s in build_dataset(config, split="validation")}
    assert len(validation) + len(train) + 1 == 6 and not train & validation  # +1: the truncated row


def test_a_saved_dataset_dict_reads_the_configured_split(saved_dataset, tmp_path):
    _, dataset = saved_dataset
    splits = datasets.DatasetDict({"train": dataset, "validation": dataset.select([1, 2])})
    splits.save_to_disk(str(tmp_path / "dict"))
    config = folder_config(tmp_path / "dict", source="hf", caption_column="caption", split="validation")
    assert sorted(s["caption"] for s in build_dataset(config)) == ["row 1", "row 2"]
    config.split = "test"
    with pytest.raises(DataError, match=r"^\S+ has no split 'test' \(splits: train, validation\)"):
        build_dataset(config)


@pytest.mark.parametrize("problem", ["missing", "wrong column", "mixed formats"])
def test_unusable_hf_data_raises_data_error(saved_dataset, tmp_path, problem):
    path, _ = saved_dataset
    config = folder_config(path, source="hf", caption_column="caption")
    expected = str(path)
    if problem == "missing":
        config.path = expected = str(tmp_path / "nothing.parquet")
    if problem == "wrong column":
        config.caption_column, expected = "text", "no column 'text'"
    if problem == "mixed formats":
        (tmp_path / "files").mkdir()
        (tmp_path / "files" / "a.parquet").write_bytes(b"")
        (tmp_path / "files" / "b.csv").write_text("x\n")
        config.path = expected = str(tmp_path / "files")
    with pytest.raises(DataError) as error:
        build_dataset(config)
    assert expected in str(error.value)
