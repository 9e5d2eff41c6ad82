"""DataLoader: batches from a data set, optionally transformed and prefetched by workers.

Workers are threads, chosen by measurement on the 2-core machine (batch 64, built-in data):
gathering and converting a batch is ~0.1 ms of numpy calls that release the GIL (up to
~0.7 ms with augmentation), so one thread keeps ahead of the step, while a process pool tops
out at 28-40k images/s, paying pickling and a pipe copy per 786 KB batch, plus fork hazards
(workers inherit the trainer's signal handlers). A worker thread only pays when a core is
free: next to a compiled step that uses every core it costs the step more than loading
between steps does (graphc train's default, see training/config.py default_workers).
Batches are produced in any order by the workers but always delivered in sampler order, so
num_workers=N yields exactly what num_workers=0 yields.

Resumable: `state_dict()` records the sampler's state at the start of the epoch in progress
and how many batches of it were delivered; after `load_state_dict`, the next iteration
replays that epoch's order and skips the delivered batches without loading them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from graphc import dispatch
from graphc import random as grandom
from graphc.data.dataset import Dataset
from graphc.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    _load_state,
    _state_of,
    resolve_seed,
)
from graphc.data.transforms import Transform
from graphc.errors import OptionError
from graphc.tensor import Tensor


def default_collate(samples: Sequence[Any]) -> Any:
    """Stacks a list of samples into a batch, as torch's default_collate: tensors and arrays
    are stacked, Python ints become int64 and floats float32 tensors, tuples/lists/dicts are
    collated field by field."""
    first = samples[0]
    if isinstance(first, (Tensor, np.ndarray)):
        arrays = [s.detach().numpy() if isinstance(s, Tensor) else np.asarray(s) for s in samples]
        return Tensor._wrap(np.stack(arrays))
    if isinstance(first, (bool, np.bool_)):
        return Tensor._wrap(np.array(samples, dtype=np.bool_))
    if isinstance(first, (int, np.integer)):
        return Tensor._wrap(np.array(samples, dtype=np.int64))
    if isinstance(first, (float, np.floating)):
        return Tensor._wrap(np.array(samples, dtype=np.float32))
    if isinstance(first, (str, bytes)):
        return list(samples)
    if isinstance(first, Mapping):
        return {k: default_collate([s[k] for s in samples]) for k in first}
    if isinstance(first, Sequence):
        if any(len(s) != len(first) for s in samples):
            raise ValueError("default_collate: each sample in the batch must have equal size")
        return type(first)(default_collate(list(field)) for field in zip(*samples, strict=True))
    raise TypeError(
        f"default_collate: cannot batch samples of type {type(first).__name__}; "
        "pass collate_fn= to DataLoader"
    )


class DataLoader:
    """Iterates over a data set in batches, as torch.utils.data.DataLoader.

    graphc additions: `seed` (the shuffling and augmentation seed; default drawn from
    graphc's default generator), `transform` (a batch transform applied to the first field
    of every batch, see graphc.data.transforms), and state_dict/load_state_dict for
    resuming mid-epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None = 1,
        shuffle: bool = False,
        sampler: Sampler | None = None,
        batch_sampler: Sampler | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: grandom.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        seed: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        if num_workers < 0:
            raise dispatch.user_error(
                OptionError,
                f"num_workers option should be non-negative, got {num_workers}; pass 0 to load "
                "in the calling thread",
            )
        if batch_sampler is not None and (
            batch_size != 1 or shuffle or sampler is not None or drop_last
        ):
            raise ValueError(
                "batch_sampler option is mutually exclusive with batch_size, shuffle, "
                "sampler, and drop_last"
            )
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self.prefetch_factor = 2 if prefetch_factor is None else int(prefetch_factor)
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        # accepted for compatibility: there is only the CPU, and workers are threads
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = persistent_workers
        self.seed = resolve_seed(seed, generator)
        self.transform = transform
        if sampler is None:
            sampler = (
                RandomSampler(dataset, seed=self.seed) if shuffle else SequentialSampler(dataset)
            )
        self.sampler = sampler
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_sampler = batch_sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self._gather = getattr(dataset, "get_batch", None) if collate_fn is None else None
        self.epoch = 0  # the number of iterations started: keys the augmentation RNG
        self._skip = 0
        self._progress: list | None = None  # [epoch, sampler state, batches delivered]

    def __len__(self) -> int:
        if self.batch_sampler is None:
            return len(self.sampler)
        return len(self.batch_sampler)

    # ---- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        index_source = self.batch_sampler if self.batch_sampler is not None else self.sampler
        start_state = _state_of(index_source)
        epoch, self.epoch = self.epoch, self.epoch + 1
        skip, self._skip = self._skip, 0
        jobs = enumerate(iter(index_source))
        # a resumed epoch: consume the first `skip` index lists without loading anything
        jobs = itertools.islice(jobs, skip, None)
        progress = [epoch, start_state, skip]
        self._progress = progress
        fetch = self._fetcher(epoch)
        batches = (
            self._serial(jobs, fetch) if self.num_workers == 0 else self._threaded(jobs, fetch)
        )
        return self._track(batches, progress)

    def _track(self, batches: Iterator[Any], progress: list) -> Iterator[Any]:
        for batch in batches:
            progress[2] += 1
            yield batch
        if self._progress is progress:
            self._progress = None  # epoch finished: the next state is a fresh epoch

    def _fetcher(self, epoch: int) -> Callable[[int, Any], Any]:
        def fetch(batch_index: int, indices) -> Any:
            if self.batch_sampler is None:  # batch_size=None: samples one by one, no collation
                batch = self.dataset[indices]
            elif self._gather is not None:
                batch = self._gather(np.asarray(indices, dtype=np.int64))
            else:
                batch = (self.collate_fn or default_collate)([self.dataset[i] for i in indices])
            if self.transform is not None:
                batch = self._augment(batch, epoch, batch_index)
            return batch

        return fetch

    def _augment(self, batch: Any, epoch: int, batch_index: int) -> Any:
        # ~9 us to seed: skipped for transforms that draw nothing
        random = getattr(self.transform, "random", True)
        rng = np.random.default_rng([self.seed, epoch, batch_index]) if random else None
        if isinstance(batch, (tuple, list)):
            return type(batch)([self.transform(batch[0], rng), *batch[1:]])
        return self.transform(batch, rng)

    @staticmethod
    def _serial(jobs: Iterator, fetch: Callable) -> Iterator[Any]:
        for batch_index, indices in jobs:
            yield fetch(batch_index, indices)

    def _threaded(self, jobs: Iterator, fetch: Callable) -> Iterator[Any]:
        """Keeps num_workers * prefetch_factor batches in flight; delivers them in order."""
        depth = max(1, self.num_workers * self.prefetch_factor)
        pool = ThreadPoolExecutor(
            self.num_workers, thread_name_prefix="graphc-data", initializer=self._init_worker()
        )
        pending: deque = deque()
        try:
            for job in itertools.islice(jobs, depth):
                pending.append(pool.submit(fetch, *job))
            while pending:
                future = pending.popleft()
                batch = future.result(timeout=self.timeout or None)
                job = next(jobs, None)
                if job is not None:
                    pending.append(pool.submit(fetch, *job))
                yield batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def _init_worker(self) -> Callable[[], None] | None:
        if self.worker_init_fn is None:
            return None
        ids = itertools.count()
        return lambda: self.worker_init_fn(next(ids))

    # ---- resuming --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: the epoch in progress and how much of it was delivered."""
        index_source = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if self._progress is not None:
            epoch, sampler_state, done = self._progress
        else:
            epoch, sampler_state, done = self.epoch, _state_of(index_source), 0
        return {"seed": self.seed, "epoch": epoch, "batches_done": done, "sampler": sampler_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        index_source = self.batch_sampler if self.batch_sampler is not None else self.sampler
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])
        self._progress = None
        _load_state(index_source, dict(state.get("sampler", {})))
