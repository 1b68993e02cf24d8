import json

import pytest
import torch

from ldm.data import DataError, build_dataset

from .fixtures import RESOLUTION, folder_config, messy_images, noise_image, write_image, write_jsonl


def samples_by_key(dataset) -> dict[str, dict]:
    return {sample["key"]: sample for sample in dataset}


def test_sidecar_captions_map_to_their_images(sidecar_folder):
    samples = samples_by_key(build_dataset(folder_config(sidecar_folder)))
    assert len(samples) == 12
    assert samples["part1/img07.jpg"]["caption"] == "caption 7"
    pixels = samples["part0/img04.jpg"]["pixels"]
    assert pixels.shape == (3, RESOLUTION, RESOLUTION) and -1 <= pixels.min() <= pixels.max() <= 1


def test_metadata_jsonl_in_a_subfolder_maps_file_names_relative_to_it(tmp_path):
    for n in range(3):
        write_image(tmp_path / "train" / f"{n}.png", noise_image(seed=n))
    write_jsonl(tmp_path / "train" / "metadata.jsonl", [{"file_name": f"{n}.png", "text": f"jsonl {n}"} for n in range(3)])
    samples = samples_by_key(build_dataset(folder_config(tmp_path)))
    assert samples["train/2.png"]["caption"] == "jsonl 2"


def test_metadata_csv_with_a_named_caption_column(tmp_path):
    for n in range(3):
        write_image(tmp_path / f"{n}.jpg", noise_image(seed=n))
    (tmp_path / "metadata.csv").write_text('file_name,prompt\n0.jpg,csv zero\n1.jpg,"csv, one"\n2.jpg,csv two\n')
    samples = samples_by_key(build_dataset(folder_config(tmp_path, caption_column="prompt")))
    assert samples["1.jpg"]["caption"] == "csv, one"


def coco_folder(tmp_path, captions_per_image: int = 5):
    images = [{"id": 100 + n, "file_name": f"{n:012d}.jpg"} for n in range(4)]
    annotations = [
        {"image_id": 100 + n, "id": 10 * n + c, "caption": f"image {n} caption {c}"}
        for n in range(4)
        for c in range(captions_per_image)
    ]
    for image in images:
        write_image(tmp_path / "train2017" / image["file_name"], noise_image(seed=image["id"]))
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder_config(tmp_path / "train2017", coco_captions=str(path))


def test_coco_captions_are_drawn_from_the_image_s_own_captions_each_epoch(tmp_path):
    dataset = build_dataset(coco_folder(tmp_path))
    drawn = set()
    position = [dataset.key(p) for p in range(len(dataset))].index("000000000002.jpg")
    for epoch in range(6):
        drawn.add(dataset[(epoch, position)]["caption"])
    assert drawn <= {f"image 2 caption {c}" for c in range(5)} and len(drawn) > 1


def test_coco_validation_uses_the_first_caption(tmp_path):
    config = coco_folder(tmp_path)
    config.validation = 4
    assert all(s["caption"].endswith("caption 0") for s in build_dataset(config, split="validation"))


def test_every_bad_or_odd_image_is_counted_by_reason(messy_folder):
    dataset = build_dataset(folder_config(messy_folder))
    samples = samples_by_key(dataset)
    expected_out = {name for name, (_, _, skip) in messy_images().items() if skip is None}
    assert set(samples) == expected_out
    for sample in samples.values():
        assert sample["pixels"].shape == (3, RESOLUTION, RESOLUTION)
        assert -1 <= sample["pixels"].min() <= sample["pixels"].max() <= 1
    stats = dataset.stats
    assert stats.seen == 8
    assert stats.converted == {"CMYK->RGB": 1, "greyscale->RGB": 1, "RGBA->RGB": 1, "16-bit->8-bit": 1}
    assert stats.skipped == {"unreadable": 1, "truncated": 1, "too small": 1}
    list(dataset)  # a second epoch counts nothing twice
    assert stats.seen == 8
    assert stats.summary() == (
        "8 images, 4 converted (1 16-bit->8-bit, 1 CMYK->RGB, 1 RGBA->RGB, 1 greyscale->RGB), "
        "3 skipped (1 too small, 1 truncated, 1 unreadable)"
    )


def test_images_without_captions_are_skipped_and_counted(sidecar_folder):
    (sidecar_folder / "part0" / "img00.txt").unlink()
    dataset = build_dataset(folder_config(sidecar_folder))
    assert "part0/img00.jpg" not in samples_by_key(dataset)
    assert dataset.stats.skipped == {"no caption": 1}


def test_captions_from_folder_names(tmp_path):
    write_image(tmp_path / "n01" / "a.jpg", noise_image())
    write_image(tmp_path / "n02" / "b.jpg", noise_image())
    config = folder_config(tmp_path, caption_from_folder={"n01": "a photo of a tench"})
    dataset = build_dataset(config)
    assert [(s["key"], s["caption"]) for s in dataset] == [("n01/a.jpg", "a photo of a tench")]


@pytest.mark.parametrize("problem", ["missing", "empty", "no captions", "bad jsonl", "bad coco", "unknown source"])
def test_unusable_data_raises_data_error_naming_the_path(tmp_path, problem):
    folder = tmp_path / "images"
    folder.mkdir()
    config = folder_config(folder)
    named = str(folder)
    if problem == "missing":
        config.path = named = str(tmp_path / "nowhere")
    if problem == "no captions":
        write_image(folder / "a.jpg", noise_image())
    if problem == "bad jsonl":
        write_image(folder / "a.jpg", noise_image())
        (folder / "metadata.jsonl").write_text('{"file_name": "a.jpg", "text": "ok"}\n{"file_name": \n')
        named = f"{folder / 'metadata.jsonl'}:2"
    if problem == "bad coco":
        write_image(folder / "a.jpg", noise_image())
        config.coco_captions = named = str(tmp_path / "captions.json")
        (tmp_path / "captions.json").write_text('{"images": [')
    if problem == "unknown source":
        config.source = named = "imagefolders"
    with pytest.raises(DataError) as error:
        build_dataset(config)
    assert named in str(error.value) and "\n" not in str(error.value)
    if problem == "no captions":
        assert "NAME.txt" in str(error.value) and "caption_from_folder" in str(error.value)


def test_validation_is_disjoint_from_train_and_the_same_for_every_seed(sidecar_folder):
    config = folder_config(sidecar_folder, validation=2)
    train = {s["key"] for s in build_dataset(config, seed=0)}
    validation = {s["key"] for s in build_dataset(config, seed=0, split="validation")}
    assert len(train) == 10 and len(validation) == 2 and not train & validation
    assert validation == {s["key"] for s in build_dataset(config, seed=5, split="validation")}


def test_validation_has_no_augmentation_or_dropout(sidecar_folder):
    config = folder_config(sidecar_folder, validation=3, crop="random", random_flip=True, caption_dropout=1.0)
    first = [(s["key"], s["caption"], s["pixels"]) for s in build_dataset(config, seed=0, split="validation")]
    second = [(s["key"], s["caption"], s["pixels"]) for s in build_dataset(config, seed=9, split="validation")]
    assert all(caption for _, caption, _ in first)
    assert all(a[0] == b[0] and torch.equal(a[2], b[2]) for a, b in zip(first, second))
    assert all(s["caption"] == "" for s in build_dataset(config, seed=0))
