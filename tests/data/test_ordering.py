import torch

from ldm.data import build_dataset, make_batches
from ldm.data.ordering import validation_split

from .fixtures import folder_config


def test_validation_is_the_last_n_by_key_hash_and_disjoint():
    keys = [f"img{n}" for n in range(50)]
    train, validation = validation_split(keys, 5)
    assert len(validation) == 5 and not set(train) & set(validation) and len(train) + len(validation) == 50
    assert validation_split(keys[::-1], 5)[1] == sorted(49 - i for i in validation)  # independent of listing order


def test_a_small_dataset_keeps_four_fifths_for_training_whatever_validation_asks():
    keys = [f"img{n}" for n in range(24)]
    train, validation = validation_split(keys, 16)  # a count meant for a large dataset
    assert (len(train), len(validation)) == (20, 4)
    fewer = validation_split(keys, 3)[1]  # a smaller ask is taken as it is
    assert len(fewer) == 3 and set(fewer) < set(validation)
    assert validation_split(keys[:4], 16) == ([0, 1, 2, 3], [])  # under five samples: all train


def crops(config, seed, epoch=0):
    dataset = build_dataset(config, seed=seed)
    return [(s["key"], s["pixels"]) for s in (dataset[(epoch, i)] for i in range(len(dataset)))]


def same(a, b) -> bool:
    return [k for k, _ in a] == [k for k, _ in b] and all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_same_seed_same_samples_and_crops_other_seed_or_epoch_differs(sidecar_folder):
    config = folder_config(sidecar_folder, crop="random", random_flip=True)
    assert same(crops(config, 0), crops(config, 0))
    assert not same(crops(config, 0), crops(config, 1))
    assert not same(crops(config, 0), crops(config, 0, epoch=1))
    by_key = [dict(crops(config, seed)) for seed in (0, 1)]
    assert any(not torch.equal(by_key[0][k], by_key[1][k]) for k in by_key[0])  # crops, not just order


def test_batches_are_the_same_for_any_number_of_workers(sidecar_folder):
    config = folder_config(sidecar_folder, crop="random")

    def batches(workers):
        dataset = build_dataset(config, seed=2)
        return [(b["key"], b["pixels"]) for b in make_batches(dataset, batch_size=5, seed=0, num_workers=workers).epoch_batches()]

    single, double = batches(0), batches(2)
    assert [k for k, _ in single] == [k for k, _ in double] and [len(k) for k, _ in single] == [5, 5]  # 12: last 2 dropped
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(single, double))
