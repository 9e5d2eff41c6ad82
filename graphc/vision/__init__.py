"""graphc.vision: the torchvision names a PyTorch script imports, `datasets` and `transforms`,
so that `from torchvision import datasets, transforms` becomes
`from graphc.vision import datasets, transforms` and nothing else changes.

datasets.MNIST and datasets.CIFAR10 take torchvision's arguments (root, train, transform,
target_transform, download); graphc reads the files that are there and never downloads. The
transforms (ToTensor, Normalize, Compose, RandomCrop, RandomHorizontalFlip) are graphc's
batch transforms, applied by the data set to each batch it gathers.
"""

from graphc.vision import datasets, transforms

__all__ = ["datasets", "transforms"]
