"""What a TrainConfig names, built: the data sets with their transforms, the model, the
optimizer. Every failure here is a TrainError or DataError that names the option or file."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import graphc
import graphc.nn as nn
import graphc.optim as optim
from graphc.data import (
    CIFAR10,
    MNIST,
    ImageDataset,
    SyntheticCIFAR,
    SyntheticText,
    TextClassification,
    TextDataset,
    transforms,
)
from graphc.errors import GraphcError
from graphc.models import MODELS, takes_tokens
from graphc.training.config import TrainConfig, TrainError
from graphc.training.objective import RECONSTRUCTION, objective_of

DATA_KINDS = ("builtin", "cifar10:DIR", "mnist:DIR", "builtin-text", "text:DIR")


@dataclass
class DataBundle:
    """The data of a run. Image loaders yield images in [0, 1] (augmented for training when
    asked); `normalize` maps them to zero mean and unit variance inside the compiled steps,
    where it fuses with the first layer instead of costing the loader a pass over every
    batch (a quarter of the loader's time per batch). Text loaders yield token ids."""

    name: str
    train: ImageDataset | TextDataset
    test: ImageDataset | TextDataset
    train_transform: transforms.Transform | None
    test_transform: transforms.Transform | None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.sample_shape)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def is_text(self) -> bool:
        return isinstance(self.train, TextDataset)

    def samples(self, short: bool = False) -> str:
        """What the samples are, for messages: "images of 3x32x32" or "sentences of 32
        tokens" (short: "3x32x32 images", "32-token sentences")."""
        if self.is_text:
            n = self.sample_shape[0]
            return f"{n}-token sentences" if short else f"sentences of {n} tokens"
        shape = "x".join(map(str, self.sample_shape))
        return f"{shape} images" if short else f"images of {shape}"

    def example(self, n: int) -> np.ndarray:
        """n all-zero samples of the data's shape and dtype."""
        dtype = np.int64 if self.is_text else np.float32
        return np.zeros((n, *self.sample_shape), dtype)

    def normalizer(self):
        """x -> (x - mean) / std per channel, as tensor ops (traced into the step); token
        ids pass unchanged."""
        if self.is_text:
            return lambda tokens: tokens
        mean = np.asarray(self.train.mean, np.float32).reshape(1, -1, 1, 1)
        inv_std = 1 / np.asarray(self.train.std, np.float32).reshape(1, -1, 1, 1)
        mean_t, inv_std_t = graphc.from_numpy(mean), graphc.from_numpy(inv_std)
        return lambda images: (images - mean_t) * inv_std_t


def build_data(config: TrainConfig) -> DataBundle:
    kind, _, root = config.data.partition(":")
    kind = kind.lower()
    if kind == "builtin" and not root:
        train = SyntheticCIFAR(True, config.train_size, config.seed)
        test = SyntheticCIFAR(False, config.test_size, config.seed)
    elif kind == "builtin-text" and not root:
        train = SyntheticText(True, config.train_size, config.seq_len, config.seed)
        test = SyntheticText(False, config.test_size, config.seq_len, config.seed)
        return DataBundle(kind, train, test, None, None)
    elif kind == "text" and root:
        train = _first_text(TextClassification(root, True, config.seq_len), config.train_size)
        test = _first_text(TextClassification(root, False, config.seq_len), config.test_size)
        return DataBundle(kind, train, test, None, None)
    elif kind in ("cifar10", "mnist") and root:
        reader = CIFAR10 if kind == "cifar10" else MNIST
        train = _first(reader(root, train=True), config.train_size)
        test = _first(reader(root, train=False), config.test_size)
    else:
        raise TrainError(
            f"--data must be one of {', '.join(DATA_KINDS)} (DIR: where the files are), "
            f"not {config.data!r}"
        )
    augment = config.augment if config.augment is not None else kind == "cifar10"
    train_transform = None
    if augment:
        h = train.sample_shape[1]
        train_transform = transforms.Compose(
            [transforms.RandomCrop(h, padding=4), transforms.RandomHorizontalFlip()]
        )
    return DataBundle(kind, train, test, train_transform, None)


def _first(dataset: ImageDataset, n: int | None) -> ImageDataset:
    """The first n samples (for quick runs on a real data set), keeping its statistics."""
    if n is None or n >= len(dataset):
        return dataset
    subset = ImageDataset(dataset.images[:n], dataset.labels[:n])
    subset.classes, subset.mean, subset.std = dataset.classes, dataset.mean, dataset.std
    return subset


def _first_text(dataset: TextDataset, n: int | None) -> TextDataset:
    if n is None or n >= len(dataset):
        return dataset
    return TextDataset(dataset.tokens[:n], dataset.labels[:n], dataset.vocab, dataset.classes)


# ---- model ----------------------------------------------------------------------------------


def default_model(sample_shape: tuple[int, ...], text: bool = False) -> str:
    if text:
        return "transformer"
    return "lenet5" if tuple(sample_shape) == (1, 28, 28) else "convnet"


def default_data(spec: str | None) -> str:
    """The data `graphc train` uses when --data is not given: text for a text model."""
    if spec is None:
        return "builtin"
    try:
        cls, _ = resolve_model_class(spec)
    except TrainError:
        return "builtin"  # reported with the model, once the data is built
    return "builtin-text" if takes_tokens(cls) else "builtin"


def _data_arguments(cls: type, data: DataBundle) -> dict:
    """What a text model's constructor is told about the data (when it takes it): the
    vocabulary size, the classes, the sequence length."""
    if not (data.is_text and takes_tokens(cls)):
        return {}
    offered = {
        "vocab_size": len(data.train.vocab),
        "num_classes": data.num_classes,
        "max_len": max(data.sample_shape[0], 1),
    }
    params = inspect.signature(cls).parameters
    return {k: v for k, v in offered.items() if k in params}


def build_model(spec: str, data: DataBundle) -> nn.Module:
    """Instantiates the model and checks that it maps a batch of this data to class logits."""
    cls, origin = resolve_model_class(spec)
    try:
        net = cls(**_data_arguments(cls, data))
    except Exception as e:
        raise TrainError(
            f"could not construct {cls.__name__}() from {origin}: {type(e).__name__}: {e}\n"
            "  --model needs a class whose constructor takes no arguments (give the "
            "others defaults)"
        ) from None
    check_model_fits(net, data, origin)
    return net


def resolve_model_class(spec: str) -> tuple[type, str]:
    if spec in MODELS:
        return MODELS[spec], f"graphc.models ({spec})"
    path_text, sep, class_name = spec.rpartition(":")
    if not sep or not class_name:
        raise TrainError(
            f"--model must be one of {', '.join(MODELS)} or FILE.py:ClassName, not {spec!r}"
        )
    path = Path(path_text)
    if path.suffix == ".py" or path.exists():
        module = _import_file(path)
        origin = str(path)
    else:
        try:
            module = importlib.import_module(path_text)
        except ImportError as e:
            raise TrainError(
                f"--model {spec}: {path_text} is neither a file nor an importable module ({e})"
            ) from None
        origin = path_text
    cls = getattr(module, class_name, None)
    if cls is None:
        found = [
            n
            for n, v in vars(module).items()
            if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module.__name__
        ]
        hint = f"; it defines {', '.join(found)}" if found else "; it defines no nn.Module class"
        raise TrainError(f"{origin} has no class {class_name}{hint}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise TrainError(
            f"{origin}:{class_name} is not a graphc.nn.Module subclass (write "
            f"`import graphc.nn as nn` and `class {class_name}(nn.Module)`)"
        )
    return cls, f"{origin}:{class_name}"


def _import_file(path: Path):
    if not path.is_file():
        raise TrainError(f"--model file {path} does not exist")
    name = "graphc_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the class's own module lookups (dataclasses, ...) work
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise TrainError(
            f"importing --model file {path} failed{where}: {type(e).__name__}: {e}"
        ) from None
    return module


def check_model_fits(net: nn.Module, data: DataBundle, origin: str) -> None:
    """Runs the model eagerly on two zero samples (eval mode: no running-stat updates, no RNG
    draws) so a mismatch is reported before training, in terms of the data: class logits,
    or, for a model trained to reconstruct its input, outputs of the input's shape."""
    shape = data.sample_shape
    shape_text = "x".join(map(str, shape))
    was_training = net.training
    net.eval()
    try:
        with graphc.no_grad():
            out = net(graphc.from_numpy(data.example(2)))
    except GraphcError as e:
        raise TrainError(
            f"the model {origin} does not accept the {data.name} data's {data.samples(True)} "
            f"(a batch has shape [N, {', '.join(map(str, shape))}]"
            f"{', int64 token ids' if data.is_text else ''}):\n  {e}\n  choose a model for "
            f"{shape_text} inputs or another --data"
        ) from None
    finally:
        net.train(was_training)
    if objective_of(net) == RECONSTRUCTION:
        if not isinstance(out, graphc.Tensor) or tuple(out.shape) != (2, *shape):
            got = list(out.shape) if isinstance(out, graphc.Tensor) else type(out).__name__
            raise TrainError(
                f"the model {origin} reconstructs its input, but returns {got} for a batch of "
                f"2 images of {shape_text}; it must return the batch's shape [N, "
                f"{', '.join(map(str, shape))}]"
            )
        return
    if not isinstance(out, graphc.Tensor) or tuple(out.shape) != (2, data.num_classes):
        got = list(out.shape) if isinstance(out, graphc.Tensor) else type(out).__name__
        raise TrainError(
            f"the model {origin} returns {got} for a batch of 2 samples; {data.name} has "
            f"{data.num_classes} classes, so it must return logits of shape [N, "
            f"{data.num_classes}]"
        )


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---- optimizer ------------------------------------------------------------------------------


def build_optimizer(config: TrainConfig, net: nn.Module) -> optim.Optimizer:
    params = net.parameters()
    # weight_decay None: the optimizer's own default (AdamW's is 0.01, the others' 0)
    kwargs = {} if config.weight_decay is None else {"weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum, **kwargs)
    cls = optim.Adam if config.optimizer == "adam" else optim.AdamW
    return cls(params, lr=config.lr, **kwargs)
