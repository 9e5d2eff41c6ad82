"""Models of growing depth, for measuring how compile time scales:

    graphc bench --model docs/examples/deep_models.py:MLP32 --input-shape 3,32,32
    graphc bench --model docs/examples/deep_models.py:ResNet56 --input-shape 3,32,32

MLP<N>: N hidden layers of the same width (every hidden layer runs the same kernel codes);
ResNet56: the CIFAR ResNet with nine basic blocks per stage.
"""

import graphc.nn as nn
import graphc.nn.functional as F
from graphc.models import ResNet


class DeepMLP(nn.Module):
    def __init__(self, hidden_layers: int, width: int = 256, num_classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(3 * 32 * 32, width)
        self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(hidden_layers)])
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        x = F.relu(self.inp(x.flatten(1)))
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class MLP2(DeepMLP):
    def __init__(self):
        super().__init__(2)


class MLP8(DeepMLP):
    def __init__(self):
        super().__init__(8)


class MLP32(DeepMLP):
    def __init__(self):
        super().__init__(32)


class MLP128(DeepMLP):
    def __init__(self):
        super().__init__(128)


class ResNet56(ResNet):
    def __init__(self):
        super().__init__(9)
