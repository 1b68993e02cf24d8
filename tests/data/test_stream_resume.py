"""Webdataset resume: a batcher seeked to the position another had after n batches gives the
same batches as that one goes on to give, opening no consumed shard and decoding no consumed
sample (ldm.data.stream_position)."""

import json
import random
import tarfile

import pytest
import webdataset as wds

from ldm.data import build_dataset, make_batches, shards
from ldm.data.stream_position import ShuffleBuffer

from .test_webdataset_source import PER_SHARD, SHARDS, shard_config, write_shards

SAMPLES = SHARDS * PER_SHARD


def keys(batches) -> list[list[str]]:
    return [list(batch["key"]) for batch in batches]


def raw_keys(folder) -> dict[bytes, str]:
    """The key of each image in the shards, by its bytes: what a decode was given says which sample it was."""
    found = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    found[tar.extractfile(member).read()] = member.name.removesuffix(".jpg")
    return found


def watch_reads(monkeypatch, folder) -> tuple[list[str], list[str]]:
    """(the keys of the images decoded, the shards opened), as they happen (in this process)."""
    decoded, opened, names = [], [], raw_keys(folder)
    decode, open_shard = shards.decode_image, shards.WebDatasetShards._open_shard

    def counting_decode(source, min_size):
        decoded.append(names[source])
        return decode(source, min_size)

    def counting_open(self, url):
        opened.append(url.rsplit("/", 1)[-1])
        return open_shard(self, url)

    monkeypatch.setattr(shards, "decode_image", counting_decode)
    monkeypatch.setattr(shards.WebDatasetShards, "_open_shard", counting_open)
    return decoded, opened


def test_the_shuffle_buffer_picks_what_webdatasets_picks():
    for size, initial in ((8, 8), (100, 100), (5, 2)):
        expected = list(wds.filters._shuffle(iter(range(40)), size, initial, rng=random.Random(7)))
        assert list(ShuffleBuffer(size, initial, random.Random(7)).shuffled(iter(range(40)))) == expected


@pytest.mark.parametrize("shuffle_buffer", [0, 4, 100])
@pytest.mark.parametrize("batch_size", [3, PER_SHARD])
def test_resume_after_any_batch_continues_exactly(tmp_path, shuffle_buffer, batch_size):
    config = shard_config(write_shards(tmp_path / "shards"), shuffle_buffer=shuffle_buffer, crop="random", random_flip=True)
    per_epoch = -(-SAMPLES // batch_size)
    whole = make_batches(build_dataset(config, seed=2), batch_size=batch_size, seed=2)
    stream = iter(whole)
    expected = [next(stream) for _ in range(per_epoch + 2)]  # into the second epoch
    for taken in range(per_epoch + 1):
        first = make_batches(build_dataset(config, seed=2), batch_size=batch_size, seed=2)
        stream = iter(first)
        for _ in range(taken):
            next(stream)
        resumed = make_batches(build_dataset(config, seed=2), batch_size=batch_size, seed=2)
        resumed.seek(json.loads(json.dumps(first.position())))  # as trainer.json keeps it
        stream = iter(resumed)
        again = [next(stream) for _ in range(per_epoch + 2 - taken)]
        assert keys(again) == keys(expected[taken:]), taken
        assert all((a["pixels"] == b["pixels"]).all() for a, b in zip(again, expected[taken:]))


@pytest.mark.parametrize("shuffle_buffer", [0, 6])
def test_resume_opens_no_consumed_shard_and_decodes_no_consumed_sample(tmp_path, monkeypatch, shuffle_buffer):
    config = shard_config(write_shards(tmp_path / "shards"), shuffle_buffer=shuffle_buffer)
    first = make_batches(build_dataset(config, seed=4), batch_size=4, seed=4)
    stream = iter(first)
    consumed = sum((next(stream)["key"] for _ in range(3)), [])  # 12 of the epoch's 20 samples
    decoded, opened = watch_reads(monkeypatch, tmp_path / "shards")
    resumed = make_batches(build_dataset(config, seed=4), batch_size=4, seed=4)
    resumed.seek(first.position())
    rest = sum(keys(resumed.epoch_batches()), [])
    assert sorted(consumed + rest) == sorted(f"s{s}-{n:02d}" for s in range(SHARDS) for n in range(PER_SHARD))
    assert decoded == rest  # each sample trained on, decoded once; none of the consumed ones
    # Shards none of whose samples were left (read and out of the shuffle buffer) stay closed.
    pending = {key.split("-")[0] for key in rest}
    assert len(opened) == len(set(opened)) and set(opened) == {f"shard-{int(s[1:]):06d}.tar" for s in pending}


def test_with_workers_each_resumes_its_own_shards_in_turn(tmp_path):
    config = shard_config(write_shards(tmp_path / "shards"), shuffle_buffer=4)
    batches = lambda: make_batches(build_dataset(config, seed=1), batch_size=2, seed=1, num_workers=2)  # noqa: E731
    expected = keys(batches().epoch_batches())
    for taken in (3, 6):  # the next batch is the second worker's, then the first's
        first = batches()
        stream = first.epoch_batches()
        for _ in range(taken):
            next(stream)
        position = first.position()
        assert position["stream"]["workers"] == 2 and all(position["stream"]["positions"])
        resumed = batches()
        resumed.seek(position)
        assert keys(resumed.epoch_batches()) == expected[taken:]


def test_a_position_without_the_workers_places_reads_past_the_consumed_batches(tmp_path):
    """An older checkpoint, or another data.num_workers: the consumed batches are read again and dropped."""
    config = shard_config(write_shards(tmp_path / "shards"), shuffle_buffer=4)
    expected = keys(make_batches(build_dataset(config, seed=1), batch_size=2, seed=1).epoch_batches())
    resumed = make_batches(build_dataset(config, seed=1), batch_size=2, seed=1)
    resumed.seek({"epoch": 0, "batch": 3})
    assert keys(resumed.epoch_batches()) == expected[3:]
    other_workers = make_batches(build_dataset(config, seed=1), batch_size=2, seed=1)
    other_workers.seek({"epoch": 0, "batch": 3, "stream": {"workers": 2, "next_worker": 1, "positions": [None, None]}})
    assert keys(other_workers.epoch_batches()) == expected[3:]
