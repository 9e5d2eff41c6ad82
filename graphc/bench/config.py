"""What a benchmark run measures: BenchConfig (the whole run) and Workload (one model, batch
size and mode, the unit handed to child processes as JSON)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from graphc.errors import GraphcError

BACKENDS = ("native", "interpreter")
OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.001, "adam": 0.001}  # anchors.md: SGD(lr=0.001, momentum=0.9)
# Contender names, in the order tables list them; "torch-eager" is the ratios' baseline.
GRAPHC, TORCH_EAGER, TORCH_COMPILE, GRAPHC_EAGER = (
    "graphc",
    "torch-eager",
    "torch-compile",
    "graphc-eager",
)
# The parent's wall clock (time.time()) just before it started a child: the child's "process
# start to first step" counts from it, so interpreter start-up and imports are included.
SPAWN_TIME_VAR = "GRAPHC_BENCH_SPAWN_TIME"


class BenchError(GraphcError):
    """A benchmark that cannot run or whose result must not be reported (the message says why)."""


def machine_threads() -> int:
    """The cores this process may run on (2 on the project's machines)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class BenchConfig:
    # convnet | lenet5 | mlp | resnet20 | mobilenet | autoencoder | FILE.py:Class | module:Class
    model: str = "convnet"
    input_shape: tuple[int, ...] | None = None  # per sample; None: the built-in model's own
    batch_sizes: tuple[int, ...] = (64,)
    optimizer: str = "sgd"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    momentum: float = 0.9  # SGD only
    steps: int = 20  # timed steps of each contender per round
    rounds: int = 10
    warmup: int = 10  # untimed steps of each contender before the first round
    threads: int = field(default_factory=machine_threads)
    backend: str = "native"
    torch: bool = True  # PyTorch eager as a contender (and the correctness reference)
    torch_compile: bool = True
    train: bool = True
    inference: bool = False  # also time forward-only latency at inference_batch
    inference_batch: int = 1
    startup: bool = True  # cold/warm start and peak RSS probes (child processes)
    rss_steps: int = 20  # training steps each startup probe runs before reading its peak RSS
    seed: int = 0
    timeout: float = 1800.0  # seconds any one child process may take

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BenchError(f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend}")
        if self.optimizer not in OPTIMIZERS:
            raise BenchError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        positive = {
            "--steps": self.steps,
            "--rounds": self.rounds,
            "--threads": self.threads,
            "--inference-batch": self.inference_batch,
        }
        for name, value in positive.items():
            if value < 1:
                raise BenchError(f"{name} must be at least 1, not {value}")
        if self.warmup < 0 or self.rss_steps < 0:
            raise BenchError("--warmup and --rss-steps must not be negative")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchError(f"batch sizes must be positive, not {self.batch_sizes}")
        if not (self.train or self.inference):
            raise BenchError("nothing to run: --no-train needs --inference")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        for name, value in (("--lr", self.lr), ("--timeout", self.timeout)):
            if not (math.isfinite(value) and value > 0):
                raise BenchError(f"{name} must be a finite number > 0, not {value}")

    def workloads(self) -> list[Workload]:
        common = {
            "model": self.model,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "seed": self.seed,
            "backend": self.backend,
            "threads": self.threads,
        }
        out = []
        if self.train:
            out += [Workload(kind="train", batch_size=b, **common) for b in self.batch_sizes]
        if self.inference:
            out.append(Workload(kind="inference", batch_size=self.inference_batch, **common))
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d


@dataclass
class Workload:
    """One measured configuration: a model, a batch size, training steps or forward passes."""

    kind: str  # "train" | "inference"
    model: str
    input_shape: list[int] | None
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    seed: int
    backend: str
    threads: int

    @property
    def label(self) -> str:
        what = "train" if self.kind == "train" else "inference"
        return f"{self.model}, batch {self.batch_size}, {what}"

    def optimizer_text(self) -> str:
        if self.optimizer == "sgd":
            return f"SGD(lr={self.lr:g}, momentum={self.momentum:g})"
        return f"Adam(lr={self.lr:g})"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Workload:
        return cls(**d)
