import tarfile

import pytest
import webdataset as wds

from ldm.data import DataError, build_dataset, make_batches

from .fixtures import RESOLUTION, encoded, folder_config, messy_images, noise_image


SHARDS, PER_SHARD = 4, 5


def write_shards(folder, bad_samples: bool = False) -> str:
    """SHARDS tar shards of PER_SHARD good samples (key sSS-NN, caption 'shard S sample N');
    with bad_samples, shard 0 also holds a corrupt JPEG, a CMYK one and one without caption."""
    folder.mkdir(exist_ok=True)
    for shard in range(SHARDS):
        with wds.TarWriter(str(folder / f"shard-{shard:06d}.tar")) as writer:
            for n in range(PER_SHARD):
                image = encoded(noise_image(seed=shard * 100 + n), "JPEG")
                writer.write({"__key__": f"s{shard}-{n:02d}", "jpg": image, "txt": f"shard {shard} sample {n}"})
            if bad_samples and shard == 0:
                images = messy_images()
                writer.write({"__key__": "bad-corrupt", "jpg": images["corrupt.jpg"][0], "txt": "x"})
                writer.write({"__key__": "bad-cmyk", "jpg": images["cmyk.jpg"][0], "txt": "cmyk"})
                writer.write({"__key__": "bad-nocaption", "jpg": images["good.jpg"][0]})
    return str(folder / "shard-{000000..000003}.tar")


def shard_config(pattern: str, **overrides):
    return folder_config(pattern, source="webdataset", **{"shuffle_buffer": 8, **overrides})


def test_samples_are_read_by_brace_pattern_with_their_captions(tmp_path):
    dataset = build_dataset(shard_config(write_shards(tmp_path / "shards")))
    samples = {s["key"]: s for s in dataset}
    assert len(samples) == SHARDS * PER_SHARD
    assert samples["s2-03"]["caption"] == "shard 2 sample 3"
    assert samples["s2-03"]["pixels"].shape == (3, RESOLUTION, RESOLUTION)


def test_shards_split_disjointly_and_completely_across_ranks_and_workers(tmp_path):
    config = shard_config(write_shards(tmp_path / "shards"))
    seen = []
    for rank in range(2):
        dataset = build_dataset(config, seed=3, rank=rank, world_size=2)
        for batch in make_batches(dataset, batch_size=2, num_workers=2).epoch_batches():
            seen += [(rank, key) for key in batch["key"]]
    keys = [key for _, key in seen]
    assert sorted(keys) == sorted(f"s{s}-{n:02d}" for s in range(SHARDS) for n in range(PER_SHARD))
    shards_of_rank = [{key.split("-")[0] for r, key in seen if r == rank} for rank in range(2)]
    assert len(shards_of_rank[0]) == len(shards_of_rank[1]) == 2  # whole shards per rank


def test_each_worker_reads_its_own_shards(tmp_path):
    dataset = build_dataset(shard_config(write_shards(tmp_path / "shards"), shuffle_buffer=0))
    # Worker k makes batch k, k + 2, ...; a batch of 5 = one whole shard, so each batch is
    # from a single shard and the workers' shards are distinct.
    batches = [batch["key"] for batch in make_batches(dataset, batch_size=PER_SHARD, num_workers=2).epoch_batches()]
    shards = [{key.split("-")[0] for key in keys} for keys in batches]
    assert all(len(s) == 1 for s in shards) and len(set().union(*shards)) == SHARDS


def test_order_follows_the_seed_and_the_epoch(tmp_path):
    config = shard_config(write_shards(tmp_path / "shards"))

    def order(seed, epoch=0):
        dataset = build_dataset(config, seed=seed)
        dataset.set_epoch(epoch)
        return [s["key"] for s in dataset]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != order(1, epoch=1)


@pytest.mark.parametrize("taken", [2, 5, 6])  # 5 batches an epoch: mid-epoch, its end, into the next
def test_the_position_after_n_batches_resumes_with_batch_n_plus_one(tmp_path, taken):
    from .test_batches import resumed_continuation

    config = shard_config(write_shards(tmp_path / "shards"))
    expected, resumed = resumed_continuation(lambda: make_batches(build_dataset(config, seed=1), batch_size=4, seed=1), taken)
    assert resumed == expected


def test_bad_samples_and_a_truncated_shard_are_counted_and_skipped(tmp_path):
    pattern = write_shards(tmp_path / "shards", bad_samples=True)
    last = tmp_path / "shards" / "shard-000003.tar"
    with tarfile.open(last) as tar:
        second_image = tar.getmembers()[2]  # s3-01.jpg
    cut = second_image.offset_data + second_image.size // 2
    last.write_bytes(last.read_bytes()[:cut])  # the tar ends in the middle of s3-01
    dataset = build_dataset(shard_config(pattern))
    with pytest.warns(UserWarning):
        keys = {s["key"] for s in dataset}
    assert "bad-cmyk" in keys and "bad-corrupt" not in keys and "bad-nocaption" not in keys
    assert keys - {"bad-cmyk"} == {f"s{s}-{n:02d}" for s in range(3) for n in range(PER_SHARD)} | {"s3-00"}
    stats = dataset.stats
    assert stats.converted == {"CMYK->RGB": 1}
    assert stats.skipped == {"unreadable": 1, "no caption": 1, "unreadable shard": 1}


@pytest.mark.parametrize("problem", ["missing shard", "validation", "too few shards"])
def test_unusable_shards_raise_data_error(tmp_path, problem):
    pattern = write_shards(tmp_path / "shards")
    config, world_size, expected = shard_config(pattern), 1, "validation"
    if problem == "missing shard":
        config.path = pattern.replace("000003}", "000004}")
        expected = str(tmp_path / "shards" / "shard-000004.tar")
    if problem == "validation":
        config.validation = 2
    if problem == "too few shards":
        world_size, expected = 8, "4 shards"
    with pytest.raises(DataError) as error:
        build_dataset(config, world_size=world_size)
    assert expected in str(error.value)
