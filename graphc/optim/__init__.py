"""graphc.optim: SGD, Adam and AdamW with torch.optim's arguments and update rules."""

from graphc.optim import lr_scheduler
from graphc.optim.adam import Adam, AdamW
from graphc.optim.optimizer import Optimizer
from graphc.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
