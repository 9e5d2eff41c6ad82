"""graphc.data: data sets, samplers, batch transforms and the DataLoader.

The API is torch.utils.data's (Dataset, TensorDataset, DataLoader, RandomSampler,
SequentialSampler, DistributedSampler), plus readers for CIFAR-10 and MNIST and
SyntheticCIFAR, the built-in generated data set that needs no download; for text,
TextClassification (a directory of `label<TAB>text` files) and SyntheticText (the built-in
task that needs word order).
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
from graphc.data.text import SyntheticText, TextClassification, TextDataset, Vocab, tokenize

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
    "TextDataset",
    "TextClassification",
    "SyntheticText",
    "Vocab",
    "tokenize",
]
