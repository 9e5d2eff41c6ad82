"""TrainConfig: every choice `graphc train` makes, and which of them a resume must keep.

The fields in TRAJECTORY decide the sequence of parameter values a run produces; a
checkpoint stores them, and `--resume` takes them from the checkpoint so that a resumed run
continues exactly as the interrupted one would have. The others (epochs, workers, output
files) may change between the two.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from graphc.errors import GraphcError
from graphc.threads import MAX_THREADS

DEFAULT_CHECKPOINT = "graphc-train.ckpt"
SEED_MAX = 2**63 - 1  # the generator's state is int64
OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 0.03, "adam": 1e-3, "adamw": 1e-3}


class TrainError(GraphcError):
    """A bad option, model file or checkpoint for `graphc train` (the message says which)."""


@dataclass
class TrainConfig:
    # convnet | lenet5 | mlp | resnet20 | mobilenet | autoencoder | transformer | lstm |
    # FILE.py:Class; None: fits the data
    model: str | None = None
    data: str = "builtin"  # builtin | builtin-text | cifar10:DIR | mnist:DIR | text:DIR
    epochs: int = 3
    batch_size: int = 64
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    momentum: float | None = None  # SGD only; None: 0.9
    optimizer: str = "sgd"
    weight_decay: float | None = None  # None: the optimizer's default
    workers: int | None = None  # None: default_workers(), once the thread count is set
    seed: int = 0
    threads: int | None = None
    checkpoint: str = DEFAULT_CHECKPOINT
    resume: bool = False
    plot: str | None = None
    log_json: str | None = None
    train_size: int | None = None  # None: the whole split (builtin: 10,000)
    test_size: int | None = None  # None: the whole split (builtin: 2,000)
    augment: bool | None = None  # None: random crop + flip for CIFAR-10 only
    seq_len: int = 32  # text: tokens per sentence (padded or cut to it)
    progress: str = "auto"  # auto | bar | lines | none
    continue_on_nan: bool = False  # a NaN/inf loss: warn and train on (default: stop)

    def resolved(self) -> TrainConfig:
        """A copy with the data-independent defaults filled in, checked."""
        c = TrainConfig(**asdict(self))
        c.optimizer = c.optimizer.lower()
        if c.optimizer not in OPTIMIZERS:
            raise TrainError(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {c.optimizer!r}"
            )
        if c.momentum is not None and c.optimizer != "sgd":
            raise TrainError(
                f"--momentum applies to --optimizer sgd; {c.optimizer} has its own betas "
                "(leave --momentum out)"
            )
        if c.lr is None:
            c.lr = DEFAULT_LR[c.optimizer]
        if c.momentum is None and c.optimizer == "sgd":
            c.momentum = 0.9
        for name in ("epochs", "batch_size"):
            if getattr(c, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
        if c.workers is not None and c.workers < 0:
            raise TrainError("--workers must be 0 (load in the training thread) or more")
        if not (math.isfinite(c.lr) and c.lr > 0):
            raise TrainError(f"--lr must be a finite number > 0, not {c.lr}")
        if c.momentum is not None and not 0 <= c.momentum < 1:  # also refuses nan
            raise TrainError(f"--momentum must be a finite number in [0, 1), not {c.momentum}")
        if c.weight_decay is not None and not 0 <= c.weight_decay < math.inf:
            raise TrainError(f"--weight-decay must be a finite number >= 0, not {c.weight_decay}")
        if c.threads is not None and not 1 <= c.threads <= MAX_THREADS:
            raise TrainError(f"--threads must be 1..{MAX_THREADS}, not {c.threads}")
        if not 0 <= c.seed <= SEED_MAX:
            raise TrainError(f"--seed must be in [0, {SEED_MAX}], not {c.seed}")
        if c.seq_len < 1:
            raise TrainError(f"--seq-len must be at least 1, not {c.seq_len}")
        for name in ("train_size", "test_size"):
            v = getattr(c, name)
            if v is not None and v < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
        if c.progress not in ("auto", "bar", "lines", "none"):
            raise TrainError(f"progress must be auto, bar, lines or none, not {c.progress!r}")
        return c


# Options that decide the run's numbers: a resume takes them from the checkpoint.
TRAJECTORY = (
    "model",
    "data",
    "batch_size",
    "lr",
    "momentum",
    "optimizer",
    "weight_decay",
    "seed",
    "train_size",
    "test_size",
    "augment",
    "seq_len",
)


def trajectory_of(config: TrainConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in TRAJECTORY}


def merge_for_resume(
    config: TrainConfig, saved: dict[str, Any], explicit: set[str], where: str
) -> TrainConfig:
    """config with the checkpoint's trajectory options. An option the user set explicitly to
    a different value is an error: the resumed run could not match the original."""
    merged = TrainConfig(**asdict(config))
    known = {f.name for f in fields(TrainConfig)}
    for name, value in saved.items():
        if name not in known:
            continue
        mine = getattr(config, name)
        if name in explicit and mine != value:
            flag = "--" + name.replace("_", "-")
            raise TrainError(
                f"{flag} {mine} differs from the checkpoint {where}, which was trained with "
                f"{flag} {value}; a resumed run keeps the original settings (leave {flag} "
                "out, or start a new run with another --checkpoint)"
            )
        setattr(merged, name, value)
    return merged


def default_workers(processes: int = 1) -> int:
    """Loader threads for `--workers` left unset: 1 when the compiled step's threads (of all
    `processes` training ranks on this machine) leave a core free, else 0. A prefetch thread
    only overlaps loading with the step on a spare core; otherwise it takes its time from the
    step's own threads, and preempting one of them stalls a whole parallel region. Measured
    with the built-in data at batch 64 on 2 cores and 2 step threads, train-loop images/s
    over the step's own on the same batches (medians of 5 epochs, 4 runs): 0.90-0.96 loading
    in the training thread, 0.86-0.92 with one loader thread."""
    from graphc import threads

    return 1 if threads.usable_cores() > threads.get_num_threads() * processes else 0
