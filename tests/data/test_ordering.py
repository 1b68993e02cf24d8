import torch

from ldm.data import build_dataset, make_loader
from ldm.data.ordering import validation_split, rank_share

from .fixtures import folder_config


def test_rank_shares_are_disjoint_complete_and_equal_when_padded():
    items = list(range(11))
    shares = [rank_share(items, rank, 3, pad=True) for rank in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]
    assert set().union(*shares) == set(items)
    unpadded = [rank_share(items, rank, 3, pad=False) for rank in range(3)]
    assert sorted(sum(unpadded, [])) == items


def test_validation_is_the_last_n_by_key_hash_and_disjoint():
    keys = [f"img{n}" for n in range(50)]
    train, validation = validation_split(keys, 5)
    assert len(validation) == 5 and not set(train) & set(validation) and len(train) + len(validation) == 50
    assert validation_split(keys[::-1], 5)[1] == sorted(49 - i for i in validation)  # independent of listing order


def crops(config, seed, epoch=0):
    dataset = build_dataset(config, seed=seed)
    dataset.set_epoch(epoch)
    return [(s["key"], s["pixels"]) for s in dataset]


def same(a, b) -> bool:
    return [k for k, _ in a] == [k for k, _ in b] and all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_same_seed_same_samples_and_crops_other_seed_or_epoch_differs(sidecar_folder):
    config = folder_config(sidecar_folder, crop="random", random_flip=True)
    assert same(crops(config, 0), crops(config, 0))
    assert not same(crops(config, 0), crops(config, 1))
    assert not same(crops(config, 0), crops(config, 0, epoch=1))
    by_key = [dict(crops(config, seed)) for seed in (0, 1)]
    assert any(not torch.equal(by_key[0][k], by_key[1][k]) for k in by_key[0])  # crops, not just order


def test_ranks_read_disjoint_complete_equal_shares(sidecar_folder):
    config = folder_config(sidecar_folder)
    shares = [[s["key"] for s in build_dataset(config, seed=4, rank=r, world_size=2)] for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 6
    assert not set(shares[0]) & set(shares[1]) and len(set(shares[0]) | set(shares[1])) == 12


def test_skipped_samples_are_replaced_so_ranks_stay_in_step(messy_folder):
    # 8 files, 3 of them bad: without replacement the ranks would yield different counts.
    counts = [sum(1 for _ in build_dataset(folder_config(messy_folder), rank=r, world_size=2)) for r in range(2)]
    assert counts == [4, 4]


def test_batches_are_the_same_for_any_number_of_workers(sidecar_folder):
    config = folder_config(sidecar_folder, crop="random")

    def batches(workers):
        dataset = build_dataset(config, seed=2)
        return [(b["key"], b["pixels"]) for b in make_loader(dataset, batch_size=5, num_workers=workers, seed=0)]

    single, double = batches(0), batches(2)
    assert [k for k, _ in single] == [k for k, _ in double] and [len(k) for k, _ in single] == [5, 5, 2]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(single, double))
