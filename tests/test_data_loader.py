"""DataLoader and samplers: coverage, reproducible shuffling, worker order, distributed
partitioning, collation and mid-epoch resumption."""

import numpy as np
import pytest

import graphc
from graphc.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
)
from graphc.data import transforms as T


def index_dataset(n: int) -> TensorDataset:
    """Sample i is (a 2x3x3 image filled with i, label i): batches reveal which samples."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 2, 3, 3))
    return TensorDataset(np.ascontiguousarray(images), np.arange(n, dtype=np.int64))


def labels_of(loader) -> list[list[int]]:
    return [labels.numpy().tolist() for _, labels in loader]


class PerSample(Dataset):
    """A data set with only __getitem__ (no batch gather): the collate path."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full((2,), i, np.float32), i


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_exactly_once_per_epoch(shuffle, drop_last):
    loader = DataLoader(index_dataset(103), batch_size=10, shuffle=shuffle, drop_last=drop_last)
    for _ in range(2):
        batches = labels_of(loader)
        sizes = [len(b) for b in batches]
        assert sizes == [10] * 10 + ([] if drop_last else [3])
        assert len(loader) == len(batches)
        seen = sorted(i for b in batches for i in b)
        if drop_last:
            assert len(set(seen)) == 100 and len(seen) == 100
        else:
            assert seen == list(range(103))


def test_images_match_labels():
    for images, labels in DataLoader(index_dataset(20), batch_size=7, shuffle=True, seed=1):
        assert images.shape[1:] == (2, 3, 3)
        np.testing.assert_array_equal(images.numpy()[:, 0, 0, 0], labels.numpy())
        assert images.dtype == graphc.float32 and labels.dtype == graphc.int64


def test_shuffle_reproducible_by_seed_and_different_across_epochs():
    ds = index_dataset(50)
    a = DataLoader(ds, batch_size=50, shuffle=True, seed=7)
    b = DataLoader(ds, batch_size=50, shuffle=True, seed=7)
    c = DataLoader(ds, batch_size=50, shuffle=True, seed=8)
    a_epochs = [labels_of(a)[0] for _ in range(3)]
    b_epochs = [labels_of(b)[0] for _ in range(3)]
    assert a_epochs == b_epochs
    assert a_epochs[0] != a_epochs[1] != a_epochs[2]
    assert labels_of(c)[0] != a_epochs[0]
    assert a_epochs[0] != list(range(50))


def test_default_seed_follows_graphc_manual_seed():
    graphc.manual_seed(3)
    first = labels_of(DataLoader(index_dataset(30), batch_size=30, shuffle=True))
    graphc.manual_seed(3)
    second = labels_of(DataLoader(index_dataset(30), batch_size=30, shuffle=True))
    graphc.manual_seed(4)
    third = labels_of(DataLoader(index_dataset(30), batch_size=30, shuffle=True))
    assert first == second
    assert first != third


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_workers_deliver_the_same_batches_in_the_same_order(num_workers):
    ds = index_dataset(157)
    aug = T.Compose([T.RandomCrop(3, padding=1), T.RandomHorizontalFlip()])
    serial = DataLoader(ds, batch_size=8, shuffle=True, seed=5, transform=aug)
    threaded = DataLoader(
        ds, batch_size=8, shuffle=True, seed=5, transform=aug, num_workers=num_workers
    )
    for _ in range(2):
        expected = [(x.numpy(), y.numpy()) for x, y in serial]
        got = [(x.numpy(), y.numpy()) for x, y in threaded]
        assert len(got) == len(expected) == 20
        for (xe, ye), (xg, yg) in zip(expected, got, strict=True):
            np.testing.assert_array_equal(ye, yg)
            np.testing.assert_array_equal(xe, xg)


def test_workers_with_collate_fn_and_per_sample_dataset():
    def collate(samples):
        return default_collate(samples)

    serial = labels_of(DataLoader(PerSample(23), batch_size=4, collate_fn=collate))
    threaded = labels_of(DataLoader(PerSample(23), batch_size=4, collate_fn=collate, num_workers=2))
    assert serial == threaded == [list(range(i, min(i + 4, 23))) for i in range(0, 23, 4)]


def test_worker_exception_reaches_the_caller():
    class Broken(PerSample):
        def __getitem__(self, i):
            if i == 9:
                raise ValueError("sample 9 is broken")
            return super().__getitem__(i)

    loader = DataLoader(Broken(20), batch_size=4, num_workers=2)
    got = []
    with pytest.raises(ValueError, match="sample 9 is broken"):
        for _, labels in loader:
            got.append(labels.numpy().tolist())
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the batches before the broken one, in order


def test_early_break_then_new_epoch_with_workers():
    loader = DataLoader(index_dataset(40), batch_size=4, shuffle=True, seed=2, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert sorted(sum(labels_of(loader), [])) == list(range(40))


def test_default_collate_structures():
    samples = [({"x": np.ones(2, np.float32) * i, "n": i}, float(i), "s") for i in range(3)]
    batch = default_collate(samples)
    np.testing.assert_array_equal(batch[0]["x"].numpy()[:, 0], [0, 1, 2])
    assert batch[0]["n"].dtype == graphc.int64
    assert batch[1].dtype == graphc.float32
    assert batch[2] == ["s", "s", "s"]


def test_batch_size_none_yields_samples():
    loader = DataLoader(PerSample(3), batch_size=None)
    assert [int(y) for _, y in loader] == [0, 1, 2]


def test_subset_uses_the_batch_gather():
    ds = Subset(index_dataset(10), [9, 3, 5])
    assert hasattr(ds, "get_batch")
    assert labels_of(DataLoader(ds, batch_size=2)) == [[9, 3], [5]]
    assert not hasattr(Subset(PerSample(4), [1]), "get_batch")


def test_argument_errors():
    ds = index_dataset(4)
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=-1)
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(np.zeros(3), np.zeros(4))


def test_random_sampler_with_replacement_and_num_samples():
    s = RandomSampler(range(10), replacement=True, num_samples=25, seed=0)
    draws = list(s)
    assert len(draws) == 25 and all(0 <= i < 10 for i in draws)
    s2 = RandomSampler(range(10), num_samples=25, seed=0)
    draws2 = list(s2)
    assert len(draws2) == 25
    assert sorted(draws2[:10]) == list(range(10)) and sorted(draws2[10:20]) == list(range(10))


def test_batch_sampler_lengths():
    assert len(BatchSampler(SequentialSampler(range(10)), 3, False)) == 4
    assert len(BatchSampler(SequentialSampler(range(10)), 3, True)) == 3
    assert list(BatchSampler(SequentialSampler(range(5)), 2, False)) == [[0, 1], [2, 3], [4]]


# ---- DistributedSampler --------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_partitions_disjointly_and_covers(shuffle):
    n, world = 40, 4
    for epoch in range(2):
        parts = []
        for rank in range(world):
            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=3)
            s.set_epoch(epoch)
            parts.append(list(s))
            assert len(s) == 10
        flat = sum(parts, [])
        assert sorted(flat) == list(range(n))  # disjoint and covering
    # every rank sees the same permutation, so the shares differ by epoch together
    s0 = DistributedSampler(range(n), 4, 0, shuffle=True, seed=3)
    e0 = list(s0)
    s0.set_epoch(1)
    assert list(s0) != e0 or not shuffle


def test_distributed_sampler_uneven_sizes():
    n, world = 10, 4
    padded = [list(DistributedSampler(range(n), world, r, shuffle=True, seed=1)) for r in range(4)]
    assert all(len(p) == 3 for p in padded)
    flat = sum(padded, [])
    assert set(flat) == set(range(n)) and len(flat) == 12  # two padded repeats, PyTorch's rule
    dropped = [
        list(DistributedSampler(range(n), world, r, shuffle=True, seed=1, drop_last=True))
        for r in range(4)
    ]
    flat = sum(dropped, [])
    assert all(len(p) == 2 for p in dropped) and len(set(flat)) == 8


def test_distributed_sampler_rank_check():
    with pytest.raises(ValueError, match="rank"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    s = DistributedSampler(range(4))  # no process group: a world of one
    assert (s.num_replicas, s.rank) == (1, 0)


def test_distributed_sampler_in_a_loader():
    ds = index_dataset(24)
    got = []
    for rank in range(3):
        sampler = DistributedSampler(ds, num_replicas=3, rank=rank, seed=4)
        got += sum(labels_of(DataLoader(ds, batch_size=5, sampler=sampler)), [])
    assert sorted(got) == list(range(24))


# ---- resuming ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop_after", [0, 3, 7])
def test_resume_mid_epoch_continues_exactly(num_workers, stop_after):
    ds = index_dataset(50)
    aug = T.RandomHorizontalFlip()

    def make():
        return DataLoader(
            ds, batch_size=7, shuffle=True, seed=9, num_workers=num_workers, transform=aug
        )

    reference = make()
    expected = [labels_of(reference) for _ in range(3)]

    first = make()
    assert labels_of(first) == expected[0]
    it = iter(first)
    partial = [next(it)[1].numpy().tolist() for _ in range(stop_after)]
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == stop_after

    resumed = make()
    resumed.load_state_dict(state)
    rest = labels_of(resumed)
    assert partial + rest == expected[1]
    assert labels_of(resumed) == expected[2]


def test_state_after_a_finished_epoch_starts_the_next():
    loader = DataLoader(index_dataset(12), batch_size=5, shuffle=True, seed=1)
    labels_of(loader)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 0
    other = DataLoader(index_dataset(12), batch_size=5, shuffle=True, seed=99)
    other.load_state_dict(state)
    assert labels_of(other) == labels_of(loader)
