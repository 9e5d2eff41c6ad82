"""graphc.training: the `graphc train` job as a library (configuration, data, model and
optimizer set-up, the compiled training loop, checkpoints, progress and reports)."""

from graphc.training.config import TrainConfig, TrainError
from graphc.training.loop import Trainer

__all__ = ["TrainConfig", "TrainError", "Trainer"]
