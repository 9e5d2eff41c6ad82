"""graphc.nn: modules, layers and losses with PyTorch's names and semantics."""

from graphc.nn import functional, init, utils
from graphc.nn.activation import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from graphc.nn.attention import MultiheadAttention
from graphc.nn.container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from graphc.nn.embedding import Embedding
from graphc.nn.layernorm import LayerNorm
from graphc.nn.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
)
from graphc.nn.layers_spatial import (
    AdaptiveMaxPool2d,
    CircularPad2d,
    ConstantPad2d,
    ConvTranspose2d,
    Dropout2d,
    ReflectionPad2d,
    ReplicationPad2d,
    Upsample,
    UpsamplingBilinear2d,
    UpsamplingNearest2d,
    ZeroPad2d,
)
from graphc.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from graphc.nn.module import Module
from graphc.nn.normalization import GroupNorm, InstanceNorm2d
from graphc.nn.parameter import Parameter
from graphc.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from graphc.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "functional",
    "init",
    "utils",
    "Module",
    "Parameter",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "ParameterList",
    "ParameterDict",
    "Identity",
    "Linear",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "Upsample",
    "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
    "ZeroPad2d",
    "ConstantPad2d",
    "ReflectionPad2d",
    "ReplicationPad2d",
    "CircularPad2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "LeakyReLU",
    "ReLU6",
    "Hardtanh",
    "ELU",
    "GELU",
    "SiLU",
    "Hardswish",
    "Hardsigmoid",
    "Softplus",
    "LogSigmoid",
    "PReLU",
    "Flatten",
    "Dropout",
    "Dropout2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Embedding",
    "LayerNorm",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerEncoder",
    "LSTM",
    "GRU",
    "LSTMCell",
    "GRUCell",
    "GroupNorm",
    "InstanceNorm2d",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "SmoothL1Loss",
    "HuberLoss",
    "KLDivLoss",
]


def __getattr__(name: str):
    if name == "parallel":  # imported on first use (graphc.nn.parallel.DistributedDataParallel)
        import importlib

        return importlib.import_module("graphc.nn.parallel")
    raise AttributeError(f"module 'graphc.nn' has no attribute {name!r}")
