"""The training checkpoint: everything a resumed run needs to continue bit for bit.

Contents: the model and optimizer state dicts, where the run stands (epoch, phase, steps,
the loader's position inside the epoch and its sampler's seed), graphc's default generator
state (dropout and any other draws), the running sums of the epoch in progress, the
history, and the options that decide the trajectory. Stored with graphc.save (no pickle,
atomic write), so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphc
from graphc.errors import DataError
from graphc.training.config import TrainError
from graphc.training.report import History

KIND = "graphc-train-checkpoint"
VERSION = 1


@dataclass
class RunState:
    """Where a run stands. phase: "train" (epoch `epoch` in progress or next) or "eval"
    (its training is done, its evaluation is not)."""

    epoch: int = 0
    phase: str = "train"
    step: int = 0  # steps done in the whole run
    batch: int = 0  # steps done in this epoch
    loss_sum: float = 0.0  # sum over the epoch's samples so far (for the exact mean)
    samples: int = 0
    history: History = field(default_factory=History)


def save_checkpoint(
    path: str, config: dict[str, Any], state: RunState, net, optimizer, loader
) -> None:
    graphc.save(
        {
            "kind": KIND,
            "version": VERSION,
            "config": config,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": graphc.get_rng_state(),
            "loader": loader.state_dict(),
            "epoch": state.epoch,
            "phase": state.phase,
            "step": state.step,
            "batch": state.batch,
            "loss_sum": state.loss_sum,
            "samples": state.samples,
            "history": state.history.to_state(),
        },
        path,
    )


def read_checkpoint(path: str) -> dict[str, Any]:
    if not Path(path).exists():
        raise TrainError(
            f"--resume: there is no checkpoint {path} (run without --resume to start a new "
            "run, or point --checkpoint at the file to resume from)"
        )
    ckpt = graphc.load(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise DataError(
            f"{path} is a graphc file but not a `graphc train` checkpoint (it has no "
            "training state); pass the checkpoint that graphc train wrote"
        )
    if ckpt.get("version") != VERSION:
        raise DataError(
            f"{path} is a version {ckpt.get('version')} checkpoint; this graphc reads {VERSION}"
        )
    return ckpt


def restore(ckpt: dict[str, Any], net, optimizer, loader) -> RunState:
    """Loads the checkpoint's states into freshly built objects; returns where to go on."""
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    graphc.set_rng_state(ckpt["rng"])
    loader.load_state_dict(ckpt["loader"])  # mid-epoch: replays the order, skips what was done
    return RunState(
        epoch=int(ckpt["epoch"]),
        phase=ckpt["phase"],
        step=int(ckpt["step"]),
        batch=int(ckpt["batch"]),
        loss_sum=float(ckpt["loss_sum"]),
        samples=int(ckpt["samples"]),
        history=History.from_state(ckpt["history"]),
    )
