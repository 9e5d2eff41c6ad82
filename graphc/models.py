"""Built-in models: the reference ConvNet of DESIGN §1, other benchmark networks, text models."""

from __future__ import annotations

import graphc.nn as nn
import graphc.nn.functional as F


class ConvNet(nn.Module):
    """LeNet-style ConvNet for 3x32x32 inputs and 10 classes (the reference workload)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 (MNIST-shaped) inputs."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """A 3-layer perceptron over flattened inputs."""

    def __init__(self, in_features: int = 3 * 32 * 32, hidden: int = 512, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (He et al., 2016); a
    block that changes the resolution or width adds a 1x1 convolution to its shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet: a 3x3 stem of 16 channels, three stages of `blocks` basic blocks
    (16, 32 and 64 channels at 32x32, 16x16 and 8x8), global average pooling, a classifier.
    6 * blocks + 2 layers: ResNet-20 has 3 blocks per stage, ResNet-56 has 9."""

    def __init__(self, blocks: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.pool(x).flatten(1))


class ResNet20(ResNet):
    def __init__(self, num_classes: int = 10):
        super().__init__(3, num_classes)


# Text classifiers (token ids in, 0 the padding). Like the models above they use only the API
# graphc shares with PyTorch, so `graphc bench` runs the same classes on PyTorch
# (graphc/bench/twin.py). Their defaults are the built-in text task's vocabulary and classes
# (graphc.data.SyntheticText); `graphc train` passes other data's own.
TEXT_VOCAB = 60
TEXT_CLASSES = 4
TEXT_LENGTH = 32


class TextTransformer(nn.Module):
    """A small Transformer encoder classifier: token and learned position embeddings, two
    post-norm encoder layers (d_model 64, 4 heads, feed-forward 128, GELU), the mean over
    the real (non-padding) tokens, a linear classifier. No dropout by default (the built-in
    task needs none, and `graphc bench` checks the step against PyTorch's, whose random
    masks are its own); dropout=0.1 is PyTorch's layer default."""

    input_kind = "tokens"  # inputs are int64 token ids [N, L]; 0 is padding

    def __init__(
        self,
        vocab_size: int = TEXT_VOCAB,
        num_classes: int = TEXT_CLASSES,
        max_len: int = 128,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, tokens):
        pad = tokens == 0
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]  # positions 0..L-1
        x = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.fc((x * keep).sum(1) / keep.sum(1).clamp(min=1.0))


class TextLSTM(nn.Module):
    """An LSTM classifier: embeddings, a 2-layer LSTM (hidden 128), a linear classifier on
    the last layer's final hidden state."""

    input_kind = "tokens"

    def __init__(
        self,
        vocab_size: int = TEXT_VOCAB,
        num_classes: int = TEXT_CLASSES,
        embed_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embed_dim, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout
        )
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embed(tokens))
        return self.fc(h[-1])


class DepthwiseSeparable(nn.Module):
    """A 3x3 depthwise convolution (one filter per channel) and a 1x1 pointwise one, each
    with BatchNorm and ReLU (Howard et al., 2017)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, in_planes, 3, stride=stride, padding=1, groups=in_planes, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNet(nn.Module):
    """MobileNet (v1) for 3x32x32 inputs: a 3x3 stem of 32 channels, 13 depthwise-separable
    blocks (each (width, stride); the strides of 2 take 32x32 down to 2x2), global average
    pooling, a classifier. `width` multiplies every layer's channels."""

    BLOCKS = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)

    def __init__(self, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        planes = int(32 * width)
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        layers = []
        for block in self.BLOCKS:
            out, stride = block if isinstance(block, tuple) else (block, 1)
            layers.append(DepthwiseSeparable(planes, int(out * width), stride))
            planes = int(out * width)
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.pool(x).flatten(1))


class Autoencoder(nn.Module):
    """A convolutional autoencoder for 3x32x32 images: three stride-2 convolutions encode an
    image to 128 channels at 4x4, three stride-2 transposed convolutions decode it back.
    Trained to reproduce its (normalised) input under mean squared error."""

    objective = "reconstruction"  # what graphc train and bench optimise: MSE(net(x), x)

    def __init__(self, channels: int = 3):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1),  # 16x16
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 8x8
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),  # 4x4
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),  # 8x8
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),  # 16x16
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 3, stride=2, padding=1, output_padding=1),  # 32x32
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


MODELS = {
    "convnet": ConvNet,
    "lenet5": LeNet5,
    "mlp": MLP,
    "resnet20": ResNet20,
    "transformer": TextTransformer,
    "lstm": TextLSTM,
    "mobilenet": MobileNet,
    "autoencoder": Autoencoder,
}
INPUT_SHAPES = {
    "convnet": (3, 32, 32),
    "lenet5": (1, 28, 28),
    "mlp": (3, 32, 32),
    "resnet20": (3, 32, 32),
    "transformer": (TEXT_LENGTH,),
    "lstm": (TEXT_LENGTH,),
    "mobilenet": (3, 32, 32),
    "autoencoder": (3, 32, 32),
}


def takes_tokens(cls: type) -> bool:
    """Whether a model class reads token ids (int64) rather than float tensors."""
    return getattr(cls, "input_kind", None) == "tokens"


def sample_inputs(cls: type, shape: tuple[int, ...], n: int, seed: int | None = None):
    """n inputs a model of class `cls` accepts, as a numpy array: token ids for text models
    (random in 1..vocab-1, or zeros without a seed), else float32 (normal, or zeros)."""
    import inspect

    import numpy as np

    if takes_tokens(cls):
        if seed is None:
            return np.zeros((n, *shape), np.int64)
        param = inspect.signature(cls).parameters.get("vocab_size")
        vocab = param.default if param is not None else TEXT_VOCAB
        return np.random.default_rng(seed).integers(1, vocab, (n, *shape)).astype(np.int64)
    if seed is None:
        return np.zeros((n, *shape), np.float32)
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)
