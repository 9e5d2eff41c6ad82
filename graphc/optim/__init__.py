"""graphc.optim: SGD, Adam, AdamW, RMSprop, Adagrad and Adadelta with torch.optim's arguments
and update rules."""

from graphc.optim import lr_scheduler
from graphc.optim.adadelta import Adadelta
from graphc.optim.adagrad import Adagrad
from graphc.optim.adam import Adam, AdamW
from graphc.optim.optimizer import Optimizer
from graphc.optim.rmsprop import RMSprop
from graphc.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "lr_scheduler"]
