"""graphc.data: data sets, samplers, batch transforms and the DataLoader.

The API is torch.utils.data's (Dataset, TensorDataset, DataLoader, RandomSampler,
SequentialSampler, DistributedSampler), plus readers for CIFAR-10 and MNIST and
SyntheticCIFAR, the built-in generated data set that needs no download.
"""

from graphc.data import transforms
from graphc.data.cifar import CIFAR10
from graphc.data.dataset import Dataset, ImageDataset, Subset, TensorDataset
from graphc.data.loader import DataLoader, default_collate
from graphc.data.mnist import MNIST
from graphc.data.sampler import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)
from graphc.data.synthetic import SyntheticCIFAR

__all__ = [
    "transforms",
    "Dataset",
    "ImageDataset",
    "Subset",
    "TensorDataset",
    "DataLoader",
    "default_collate",
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "BatchSampler",
    "DistributedSampler",
    "CIFAR10",
    "MNIST",
    "SyntheticCIFAR",
]
