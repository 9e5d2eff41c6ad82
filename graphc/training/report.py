"""Run history and what is written from it: the --log-json document and the --plot figure.

Both are rewritten whole (atomically) from the history, which lives in the checkpoint, so
after a resume they describe the complete run, not just its second half.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from graphc.serialization import atomic_write
from graphc.training.config import TrainError

PLOT_HELP = "--plot needs matplotlib: pip install 'graphc[plot]' (or pip install matplotlib)"


@dataclass
class History:
    """Per-epoch results and the loss of every training step."""

    epoch: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)  # steps done when the epoch ended
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    images_per_second: list[float] = field(default_factory=list)
    step_images_per_second: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["step_loss"] = np.asarray(self.step_loss, np.float32)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> History:
        h = cls(**{k: list(v) for k, v in state.items() if k != "step_loss"})
        h.step_loss = [float(v) for v in np.asarray(state.get("step_loss", []))]
        return h

    def epochs(self) -> list[dict[str, Any]]:
        keys = [k for k in asdict(self) if k not in ("epoch", "step_loss")]
        return [
            {"epoch": e, **{k: getattr(self, k)[i] for k in keys}} for i, e in enumerate(self.epoch)
        ]


def write_log_json(path: str, config: dict[str, Any], history: History, status: str, extra: dict):
    doc = {
        "status": status,
        "config": config,
        "epochs": history.epochs(),
        "steps": len(history.step_loss),
        **extra,
    }
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())


def require_matplotlib() -> None:
    """Fails before training, not after it, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TrainError(PLOT_HELP) from None


def write_plot(path: str, history: History, title: str) -> None:
    """Loss per step (with a moving average) and per epoch; test accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = np.asarray(history.step_loss, np.float64)
    if len(steps):
        x = np.arange(1, len(steps) + 1)
        ax_loss.plot(x, steps, color="0.8", linewidth=0.8, label="train loss (step)")
        k = max(1, len(steps) // 50)
        if k > 1:
            smooth = np.convolve(steps, np.ones(k) / k, mode="valid")
            ax_loss.plot(x[k - 1 :], smooth, color="C0", label=f"train loss (mean of {k})")
    if history.epoch:
        ax_loss.plot(history.step, history.test_loss, "o-", color="C1", label="test loss (epoch)")
        ax_acc.plot(history.epoch, [100 * a for a in history.test_accuracy], "o-", color="C2")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.legend(loc="upper right")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.grid(True, alpha=0.3)
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())
