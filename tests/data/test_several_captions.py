"""Several captions per image, in every form a source reads them (a metadata.jsonl list,
numbered sidecars, a list column of a `datasets` dataset, a JSON member of a webdataset sample):
one drawn per sample per epoch, every one of them over the epochs, the same for the same seed,
in any number of processes, after a resume, and from the latent cache."""

import json
import re

import datasets
import pytest
import webdataset as wds

from ldm.data import build_dataset, make_batches
from ldm.data.config import CaptionSettings
from ldm.data.latent_cache import CachedLatentDataset, LatentCache, build_latent_cache, cache_key

from .fixtures import encoded, folder_config, noise_image, write_image, write_jsonl
from .test_latent_cache import CountingEncoder

SAMPLES, CAPTIONS, EPOCHS = 6, 3, 20


def captions_of(n: int) -> list[str]:
    return [f"picture {n}, caption {c}" for c in range(CAPTIONS)]


def jsonl_folder(root):
    rows = []
    for n in range(SAMPLES):
        write_image(root / f"img{n}.jpg", noise_image(seed=n))
        rows.append({"file_name": f"img{n}.jpg", "text": captions_of(n)})
    write_jsonl(root / "metadata.jsonl", rows)
    return folder_config(root)


def sidecar_folder(root):
    """img0.txt, img0.1.txt, img0.2.txt beside img0.jpg; numbers need not start at 1."""
    for n in range(SAMPLES):
        write_image(root / "part" / f"img{n}.jpg", noise_image(seed=n))
        first, *more = captions_of(n)
        (root / "part" / f"img{n}.txt").write_text(first + "\n")
        for number, caption in enumerate(more, start=1 + n % 2):
            (root / "part" / f"img{n}.{number}.txt").write_text(caption)
    return folder_config(root)


def hf_dataset(root):
    images = [{"bytes": encoded(noise_image(seed=n), "PNG"), "path": None} for n in range(SAMPLES)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_dict({"image": images, "text": [captions_of(n) for n in range(SAMPLES)]}, features=features).save_to_disk(str(root))
    return folder_config(root, source="hf")


def shards(root, member: str):
    """Two shards; each sample's captions in a JSON member: {"text": [...]} or a bare list."""
    root.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(root / f"shard-{shard}.tar")) as writer:
            for n in range(shard * SAMPLES // 2, (shard + 1) * SAMPLES // 2):
                value = {"text": captions_of(n)} if member == "json" else captions_of(n)
                writer.write({"__key__": f"img{n}", "jpg": encoded(noise_image(seed=n), "JPEG"), member: json.dumps(value).encode()})
    return folder_config(str(root / "shard-{0..1}.tar"), source="webdataset", caption_key=member, shuffle_buffer=4)


FORMS = {
    "metadata.jsonl list": jsonl_folder,
    "numbered sidecars": sidecar_folder,
    "hf list column": hf_dataset,
    "webdataset json object": lambda root: shards(root, "json"),
    "webdataset json list": lambda root: shards(root, "captions.json"),
}


@pytest.fixture(params=list(FORMS))
def config(request, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return FORMS[request.param](tmp_path / "data")


def picture(key: str) -> int:
    """The picture number of a sample key: 'part/img3.jpg', 'img3' (a stream), '3' (an hf row)."""
    return int(re.findall(r"\d+", key)[0])


def drawn(dataset, epochs: int = EPOCHS) -> dict[str, list[str]]:
    """key -> the caption of each epoch."""
    by_key: dict[str, list[str]] = {}
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
            samples = list(dataset)
        else:
            samples = [dataset[(epoch, position)] for position in range(len(dataset))]
        for sample in samples:
            by_key.setdefault(sample["key"], []).append(sample["caption"])
    return by_key


def test_every_caption_is_drawn_over_the_epochs_and_the_same_for_the_same_seed(config):
    captions = drawn(build_dataset(config, seed=1))
    assert len(captions) == SAMPLES
    for key, per_epoch in captions.items():
        assert len(per_epoch) == EPOCHS and set(per_epoch) == set(captions_of(picture(key)))  # one per epoch, all of them
    assert drawn(build_dataset(config, seed=1)) == captions
    assert drawn(build_dataset(config, seed=2)) != captions


def test_validation_reads_the_first_caption(config):
    if config.source == "webdataset":
        pytest.skip("a stream has no validation split")
    config.validation = 1
    config.captions = CaptionSettings(shuffle_tags=True, trigger="sks")
    dataset = build_dataset(config, seed=1, split="validation")
    first = "sks, " + captions_of(picture(dataset.key(0)))[0]  # tags as written, the trigger first
    assert len(dataset) == 1 and all(dataset[(epoch, 0)]["caption"] == first for epoch in range(5))


def batches_of(batcher, count: int) -> list[list[tuple[str, str]]]:
    """The next `count` batches as (key, caption) pairs."""
    stream = iter(batcher)
    batches = [next(stream) for _ in range(count)]
    return [list(zip(batch["key"], batch["caption"])) for batch in batches]


@pytest.mark.parametrize("taken", [1, 3, 4])  # 3 batches an epoch: mid-epoch, its end, into the next
def test_the_batch_after_a_resume_has_the_captions_of_the_uninterrupted_run(config, taken):
    config.captions = CaptionSettings(shuffle_tags=True, trigger="sks", tag_dropout=0.2)

    def batcher():
        return make_batches(build_dataset(config, seed=4), batch_size=2, seed=4)

    uninterrupted = batches_of(batcher(), taken + 3)
    first = batcher()
    batches_of(first, taken)
    resumed = batcher()
    resumed.seek(first.position())
    assert batches_of(resumed, 3) == uninterrupted[taken:]


def test_two_processes_draw_the_captions_one_process_draws(config):
    if config.source == "webdataset":
        pytest.skip("a stream splits its shards across processes itself (test_webdataset_source)")
    config.captions = CaptionSettings(shuffle_tags=True)
    one = [pair for batch in batches_of(make_batches(build_dataset(config, seed=5), batch_size=2, seed=5), 6) for pair in batch]
    ranks = [make_batches(build_dataset(config, seed=5), batch_size=1, seed=5, rank=r, world_size=2) for r in range(2)]
    two = [pair for a, b in zip(batches_of(ranks[0], 6), batches_of(ranks[1], 6)) for pair in a + b]
    assert one == two


def test_the_latent_cache_keeps_every_caption_and_draws_what_the_images_draw(config, tmp_path):
    """The cache holds the captions as written; each epoch's caption (tags included) is drawn at
    read time, so a cached run trains on the captions an uncached one does, not on frozen ones."""
    config.captions = CaptionSettings(shuffle_tags=True, trigger="sks")
    images = build_dataset(config, seed=6)
    cache = LatentCache(tmp_path / "cache", cache_key("vae", images.describe()))
    build_latent_cache(images, CountingEncoder(), cache, batch_size=4, progress=False)
    assert sorted(cache.captions(key) for key in cache.keys()) == sorted(captions_of(n) for n in range(SAMPLES))
    cached = CachedLatentDataset(cache, caption_dropout=0.0, seed=6, captions=config.captions)
    from_cache, from_images = drawn(cached), drawn(build_dataset(config, seed=6))
    assert from_cache == from_images
    assert all(len(set(per_epoch)) > CAPTIONS for per_epoch in from_cache.values())  # tags reshuffled too


def test_a_numbered_sidecar_of_another_image_is_that_image_s_caption(tmp_path):
    for name in ("cat", "cat.1", "dog"):
        write_image(tmp_path / f"{name}.jpg", noise_image(seed=len(name)))
    for name, text in {"cat": "a cat", "cat.1": "the other cat", "cat.2": "a cat again", "dog.10": "dog ten", "dog.9": "dog nine"}.items():
        (tmp_path / f"{name}.txt").write_text(text)
    (tmp_path / "cat.3.txt").write_text("  \n")  # empty: not a caption
    records = build_dataset(folder_config(tmp_path)).records
    captions = dict(zip(records.files, records.captions))
    assert captions == {"cat.jpg": ["a cat", "a cat again"], "cat.1.jpg": ["the other cat"], "dog.jpg": ["dog nine", "dog ten"]}
