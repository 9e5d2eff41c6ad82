"""Samplers: which sample indices an epoch visits, in which order.

Every random order is a pure function of (seed, epoch): numpy's PCG64 seeded with that pair.
So a sampler's whole state is two integers, a checkpoint can store it, and a resumed run
sees the same permutations as an uninterrupted one. Without an explicit seed, the seed is
drawn once from graphc's default generator (reproducible under graphc.manual_seed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np

from graphc import dispatch
from graphc import random as grandom
from graphc.errors import OptionError


def resolve_seed(seed: int | None = None, generator: grandom.Generator | None = None) -> int:
    """An explicit seed, else one drawn from `generator` (default: graphc's default generator)."""
    if seed is not None:
        return int(seed) & 0x7FFFFFFFFFFFFFFF
    gen = generator if generator is not None else grandom.default_generator
    s, offset = gen.take(1)
    entropy = np.random.SeedSequence([s & 0xFFFFFFFFFFFFFFFF, offset & 0xFFFFFFFFFFFFFFFF])
    return int(entropy.generate_state(1, np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch` (what RandomSampler and DistributedSampler visit)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Sampler:
    """Iterates over sample indices. `state_dict` describes the next `__iter__`."""

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SequentialSampler(Sampler):
    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A new permutation every epoch (each `__iter__` is the next epoch).

    With replacement=True, draws num_samples indices uniformly with replacement instead.
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: grandom.Generator | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"num_samples should be a positive integer, got {num_samples}")
        self.seed = resolve_seed(seed, generator)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        n = len(self.data_source)
        if self.replacement:
            rng = np.random.default_rng([self.seed, epoch])
            return iter(rng.integers(0, n, self.num_samples).tolist())
        # more samples than the data set: whole permutations, then part of one more
        rng = np.random.default_rng([self.seed, epoch])
        reps = max(1, -(-self.num_samples // max(n, 1)))
        order = np.concatenate([rng.permutation(n) for _ in range(reps)])
        return iter(order[: self.num_samples].tolist())

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class BatchSampler(Sampler):
    """Groups a sampler's indices into lists of batch_size (the last may be shorter)."""

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise dispatch.user_error(
                OptionError,
                f"batch_size should be a positive integer, got {batch_size!r}; pass "
                "batch_size=N with N >= 1 (the number of samples per batch)",
            )
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return _state_of(self.sampler)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _load_state(self.sampler, state)


class DistributedSampler(Sampler):
    """This rank's share of the data set, as torch.utils.data.DistributedSampler.

    Every rank draws the same permutation of (seed, epoch) and takes every num_replicas-th
    index from position `rank`. Without drop_last the index list is padded with its own
    beginning to a multiple of num_replicas (so ranks step in lockstep); with drop_last the
    tail is dropped instead. Call set_epoch(e) at the start of each epoch to reshuffle.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            world, me = _distributed_world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"invalid rank {rank}: rank should be in the interval [0, {num_replicas - 1}]"
            )
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        order = permutation(self.seed, self.epoch, n) if self.shuffle else np.arange(n)
        if self.total_size > n:
            reps = -(-self.total_size // n)
            order = np.tile(order, reps)
        order = order[: self.total_size]
        return iter(order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


def _distributed_world() -> tuple[int, int]:
    """(world size, rank) from graphc.distributed when it is initialised, else (1, 0)."""
    try:
        from graphc import distributed  # type: ignore[attr-defined]
    except ImportError:
        return 1, 0
    is_init = getattr(distributed, "is_initialized", lambda: False)
    if not is_init():
        return 1, 0
    return distributed.get_world_size(), distributed.get_rank()


def _state_of(sampler: Any) -> dict[str, Any]:
    fn = getattr(sampler, "state_dict", None)
    return fn() if callable(fn) else {}


def _load_state(sampler: Any, state: dict[str, Any]) -> None:
    fn = getattr(sampler, "load_state_dict", None)
    if callable(fn) and state:
        fn(state)
