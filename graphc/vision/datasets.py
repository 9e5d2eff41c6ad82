"""torchvision.datasets' readers that graphc has (reading local files only)."""

from graphc.data.cifar import CIFAR10
from graphc.data.mnist import MNIST

__all__ = ["CIFAR10", "MNIST"]
