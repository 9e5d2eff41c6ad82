"""Bad input, as a new user gives it: one table of cases across the API, compiled steps, the
command line (train, inspect, check, bench), data readers, checkpoints and the compile cache.

Each row does one wrong thing in a fresh working directory (the current directory while it
runs) and states what must happen: the error class (or the warning, or None when graphc
repairs the damage itself), fragments of the message that say what went wrong and what to
do, and where: the user's file:line (the line marked `# <-` in a function of this file, or a
line in a user file) or the file at fault. Every row also checks that nothing in the working
directory changed: no partial file, no checkpoint overwritten, no input modified.

Each new feature adds its rows here.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc import cli as graphc_cli
from graphc.bench.config import BenchError
from graphc.data import CIFAR10, MNIST, DataLoader, TensorDataset, TextClassification
from graphc.errors import (
    ArgumentError,
    AutogradError,
    DataError,
    GraphcError,
    GraphcWarning,
    OptionError,
    ShapeError,
    StateDictError,
    TraceError,
)
from graphc.inspection import InspectError
from graphc.interpreter import ExecutionError
from graphc.training.config import TrainError

HERE = Path(__file__).name
USAGE = SystemExit  # argparse's usage error: exit status 2, the message on stderr


@dataclass
class Row:
    area: str
    name: str
    act: Callable[[], object]  # does the wrong thing (in the working directory)
    error: type[BaseException] | type[Warning] | None  # None: repaired, the act checks how
    says: tuple[str, ...] = ()  # what went wrong, and what to do
    at: Callable | str | None = None  # the function whose `# <-` line is named, or a file
    setup: Callable[[], None] | None = None  # files the act needs, written before the snapshot


def marked_line(fn: Callable) -> int:
    lines, start = inspect.getsourcelines(fn)
    marked = [start + i for i, line in enumerate(lines) if line.rstrip().endswith("# <-")]
    assert len(marked) == 1, f"{fn.__name__} needs exactly one line marked '# <-'"
    return marked[0]


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under root: its mode and the sha256 of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (path.stat().st_mode, digest)
    return out


def cli(*argv: str) -> int:
    """A graphc command as the console script runs it, except that the command's error is
    raised rather than printed, so its class can be checked (main() prints any GraphcError
    as one line with status 1: test_main_prints_a_row_error_as_one_line)."""
    args = graphc_cli.build_parser().parse_args(list(argv))
    return args._run(args)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- user files the rows use ----------------------------------------------------------------

USER_MODELS = '''
import graphc
import graphc.nn as nn


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(100, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def step(a, b):
    if (a * b).sum() > 0:
        return a
    return b


class NanAfter5(nn.Module):
    """Logits shifted by log(5.5 - steps): finite for five training steps, then nan."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)
        self.register_buffer("steps", graphc.zeros(()))

    def forward(self, x):
        if self.training:
            with graphc.no_grad():
                self.steps += 1
        return self.fc(x.flatten(1)) + (5.5 - self.steps).log()
'''


def line_in(text: str, code: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if code in line)


WIDE_LINE = line_in(USER_MODELS, "return self.fc(x.flatten(1))")
STEP_IF_LINE = line_in(USER_MODELS, "if (a * b).sum() > 0")
TINY = ["--train-size", "96", "--test-size", "32", "--batch-size", "32", "--progress", "none"]


def user_models() -> None:
    Path("models.py").write_text(USER_MODELS)


def small_net() -> nn.Module:
    graphc.manual_seed(0)
    return nn.Linear(3, 2)


# ---- API (eager) ----------------------------------------------------------------------------


def tensor_from_ragged_lists():
    graphc.tensor([[1.0, 2.0], [3.0]])  # <-


def tensor_from_strings():
    graphc.tensor(["cat", "dog"])  # <-


def layer_given_a_list():
    nn.Linear(2, 3)([[1.0, 2.0]])  # <-


def loss_given_a_numpy_target():
    F.cross_entropy(graphc.randn(2, 3), np.array([0, 1]))  # <-


def eager_backward_twice():
    net = small_net()
    loss = net(graphc.randn(4, 3)).relu().sum()
    loss.backward()
    loss.backward()  # <-


def eager_backward_of_a_vector():
    net = small_net()
    net(graphc.randn(4, 3)).backward()  # <-


def eager_backward_under_no_grad():
    net = small_net()
    with graphc.no_grad():
        loss = net(graphc.randn(4, 3)).sum()
    loss.backward()  # <-


def eager_in_place_update_of_a_parameter():
    net = small_net()
    net.weight.sub_(0.1)  # <-


def integer_tensor_requiring_grad():
    graphc.tensor([1, 2]).requires_grad_()  # <-


def view_to_a_wrong_shape():
    graphc.ones(6).view(4, -1)  # <-


def matmul_of_mismatched_shapes():
    return graphc.randn(2, 3) @ graphc.randn(4, 5)  # <-


def conv_given_a_2d_input():
    nn.Conv2d(3, 4, 3)(graphc.ones(3, 5))  # <-


def dropout_probability_above_one():
    F.dropout(graphc.ones(2), 1.5)  # <-


def sgd_with_a_nan_learning_rate():
    optim.SGD(small_net().parameters(), lr=float("nan"))  # <-


def adam_with_beta_one():
    optim.Adam(small_net().parameters(), betas=(1.0, 0.999))  # <-


def loader_with_batch_size_zero():
    DataLoader(TensorDataset(graphc.ones(4, 2)), batch_size=0)  # <-


def dataset_of_mismatched_tensors():
    TensorDataset(graphc.ones(4, 2), graphc.ones(3))  # <-


def state_dict_of_another_model():
    small_net().load_state_dict(nn.Linear(3, 3).state_dict())  # <-


def conv_transpose_output_padding_too_large():
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=2)
    return up(graphc.ones(1, 4, 5, 5))  # <-


def interpolate_without_size_or_scale():
    F.interpolate(graphc.ones(1, 3, 4, 4), mode="bilinear")  # <-


def mse_target_of_another_shape():
    F.mse_loss(graphc.ones(4, 10), graphc.ones(3, 10))  # <-


def cross_entropy_float_labels():
    F.cross_entropy(graphc.ones(4, 10), graphc.tensor([1.0, 2.0, 3.0, 4.0]))  # <-


def nll_loss_labels_of_another_shape():
    F.nll_loss(F.log_softmax(graphc.ones(4, 10), 1), graphc.tensor([[1, 2, 3, 4]]))  # <-


def unknown_backend():
    with environ(GRAPHC_BACKEND="gpu"):
        graphc.compile(lambda x: x + 1)  # <-


@contextlib.contextmanager
def threads_not_chosen_yet() -> Iterator[None]:
    """As in a new process: the thread count is read from the environment on first use (a
    compiled call reads it when it starts the thread pool, once per process)."""
    from graphc import threads

    chosen = threads._REQUESTED
    threads._REQUESTED = None
    try:
        yield
    finally:
        threads._REQUESTED = chosen


def threads_variable_not_a_number():
    with environ(GRAPHC_NUM_THREADS="many"), threads_not_chosen_yet():
        graphc.get_num_threads()  # <-


def embedding_given_float_ids():
    nn.Embedding(5, 2)(graphc.ones(3))  # <-


def lstm_given_the_wrong_feature_size():
    nn.LSTM(3, 4)(graphc.zeros(5, 2, 6))  # <-


def index_out_of_range():
    graphc.index_select(graphc.ones(3, 2), 0, graphc.tensor([0, 5]))  # <-


def einsum_with_too_few_subscripts():
    graphc.einsum("ij->i", graphc.ones(2, 3, 4))  # <-


def scan_step_reading_a_value():
    def step(h, x):
        return h + float(x.sum()), h  # <-

    graphc.scan(step, graphc.zeros(3), graphc.ones(4, 3))


API = [
    Row("api", "embedding given float ids", embedding_given_float_ids, ShapeError,
        ("expected the indices to be an integer tensor", "convert them with .long()"),
        embedding_given_float_ids),
    Row("api", "LSTM given the wrong feature size", lstm_given_the_wrong_feature_size,
        ShapeError, ("input_size = 3", "got [5, 2, 6]"), lstm_given_the_wrong_feature_size),
    Row("api", "index out of range", index_out_of_range, GraphcError,
        ("index 5 is out of range for dimension 0 with size 3", "indices must lie in 0..2"),
        index_out_of_range),
    Row("api", "einsum with too few subscripts", einsum_with_too_few_subscripts, ShapeError,
        ("do not match its 3 dimension(s)", "'ij->i'"), einsum_with_too_few_subscripts),
    Row("api", "scan step reading a value", scan_step_reading_a_value, TraceError,
        ("needs the value of a tensor", "graphc.where"), scan_step_reading_a_value),
    Row("api", "tensor from ragged lists", tensor_from_ragged_lists, ShapeError,
        ("ragged", "lists of numbers of one shape"), tensor_from_ragged_lists),
    Row("api", "tensor from strings", tensor_from_strings, ArgumentError,
        ("dtype <U3 is not supported", "convert to float32"), tensor_from_strings),
    Row("api", "layer given a list", layer_given_a_list, ArgumentError,
        ("linear(): argument 'input' must be a Tensor, not list", "graphc.tensor(...)"),
        layer_given_a_list),
    Row("api", "loss given a numpy target", loss_given_a_numpy_target, ArgumentError,
        ("argument 'target' must be a Tensor, not numpy.ndarray", "graphc.from_numpy(array)"),
        loss_given_a_numpy_target),
    Row("api", "backward twice", eager_backward_twice, AutogradError,
        ("backward through the graph a second time", "retain_graph=True"),
        eager_backward_twice),
    Row("api", "backward of a vector", eager_backward_of_a_vector, AutogradError,
        ("only for scalar outputs", "loss.sum().backward()"), eager_backward_of_a_vector),
    Row("api", "backward under no_grad", eager_backward_under_no_grad, AutogradError,
        ("does not require grad", "outside graphc.no_grad()"), eager_backward_under_no_grad),
    Row("api", "in-place update of a parameter", eager_in_place_update_of_a_parameter,
        AutogradError, ("in-place operation", "with graphc.no_grad():"),
        eager_in_place_update_of_a_parameter),
    Row("api", "integer tensor requiring grad", integer_tensor_requiring_grad, GraphcError,
        ("only floating-point tensors can require gradients", "t.float()"),
        integer_tensor_requiring_grad),
    Row("api", "view to a wrong shape", view_to_a_wrong_shape, ShapeError,
        ("shape [4, -1] is invalid for input of size 6", "must divide 6"),
        view_to_a_wrong_shape),
    Row("api", "matmul of mismatched shapes", matmul_of_mismatched_shapes, ShapeError,
        ("cannot be multiplied (2x3 and 4x5)", "mat1's columns must equal mat2's rows"),
        matmul_of_mismatched_shapes),
    Row("api", "conv given a 2-D input", conv_given_a_2d_input, ShapeError,
        ("got shape [3, 5]", "expected a 3-D (CHW) or 4-D (NCHW) input"),
        conv_given_a_2d_input),
    Row("api", "dropout probability above one", dropout_probability_above_one, GraphcError,
        ("got 1.5", "has to be between 0 and 1"), dropout_probability_above_one),
    Row("api", "SGD with a nan learning rate", sgd_with_a_nan_learning_rate, OptionError,
        ("Invalid learning rate: nan", "a finite number >= 0"), sgd_with_a_nan_learning_rate),
    Row("api", "Adam with beta 1", adam_with_beta_one, OptionError,
        ("Invalid beta parameter at index 0: 1.0", "in [0, 1)"), adam_with_beta_one),
    Row("api", "loader with batch size 0", loader_with_batch_size_zero, OptionError,
        ("batch_size should be a positive integer, got 0", "batch_size=N with N >= 1"),
        loader_with_batch_size_zero),
    Row("api", "dataset of mismatched tensors", dataset_of_mismatched_tensors, ShapeError,
        ("size mismatch between tensors ([4, 2], [3])", "one entry per sample"),
        dataset_of_mismatched_tensors),
    Row("api", "state dict of another model", state_dict_of_another_model, StateDictError,
        ("size mismatch for weight", "saved from the same model class"),
        state_dict_of_another_model),
    Row("api", "ConvTranspose2d output_padding >= stride and dilation",
        conv_transpose_output_padding_too_large, ShapeError,
        ("output padding must be smaller than either stride or dilation", "output_padding=(2, 2)",
         "use output_padding < stride"), conv_transpose_output_padding_too_large),
    Row("api", "interpolate without size or scale_factor", interpolate_without_size_or_scale,
        OptionError, ("either size or scale_factor should be defined", "scale_factor=2"),
        interpolate_without_size_or_scale),
    Row("api", "mse_loss target of another shape", mse_target_of_another_shape, ShapeError,
        ("mse_loss: the target's size [3, 10] does not match the input's size [4, 10]",
         "give a target of the input's shape"), mse_target_of_another_shape),
    Row("api", "cross_entropy with float labels", cross_entropy_float_labels, ShapeError,
        ("target is float32[4]", "int64 class indices", ".long()"), cross_entropy_float_labels),
    Row("api", "nll_loss labels of another shape", nll_loss_labels_of_another_shape, ShapeError,
        ("expected target of shape [4]", "got [1, 4]"), nll_loss_labels_of_another_shape),
    Row("api", "unknown GRAPHC_BACKEND", unknown_backend, OptionError,
        ("GRAPHC_BACKEND='gpu'", "expected 'native' or 'interpreter'"), unknown_backend),
    Row("api", "GRAPHC_NUM_THREADS not a number", threads_variable_not_a_number, OptionError,
        ("GRAPHC_NUM_THREADS='many'", "set it to one, or unset it"),
        threads_variable_not_a_number),
]  # fmt: skip


# ---- compiled steps -------------------------------------------------------------------------


def step_of(net: nn.Module, body: Callable) -> Callable:
    opt = optim.SGD(net.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = body(net, x, y)
        opt.step()
        return loss

    return graphc.compile(step)


def backward_twice(net, x, y):
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    loss.backward()  # <-
    return loss


def backward_of_a_vector(net, x, y):
    out = net(x)
    out.backward()  # <-
    return out


def backward_under_no_grad(net, x, y):
    with graphc.no_grad():
        loss = F.cross_entropy(net(x), y)
    loss.backward()  # <-
    return loss


def update_without_no_grad(net, x, y):
    net.weight.sub_(x.mean())  # <-
    return x


def item_inside(net, x, y):
    loss = F.cross_entropy(net(x), y)
    return loss * loss.item()  # <-


def if_on_a_value(net, x, y):
    loss = F.cross_entropy(net(x), y)
    if loss > 1:  # <-
        loss = loss / 2
    return loss


def train_step(net, x, y):
    loss = F.cross_entropy(net(x), y)  # <-
    loss.backward()
    return loss


X, Y = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], [1, 0]


def compiled(body: Callable, x=X, y=Y, net: nn.Module | None = None) -> Callable[[], object]:
    return lambda: step_of(net or small_net(), body)(x, y)


def ragged_list_argument():
    step = step_of(small_net(), train_step)
    step([[0.5, -1.0, 2.0], [1.5]], Y)  # <-


def unsupported_numpy_scalar():
    f = graphc.compile(lambda x, scale: x * scale)
    f(graphc.ones(2), np.uint8(3))  # <-


def unhashable_argument():
    f = graphc.compile(lambda x, opts: x)
    f(graphc.ones(2), {"fast", "exact"})  # <-


class WrongLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(401, 10)

    def forward(self, x):
        return self.fc(x.view(x.shape[0], -1))  # <-


class BadDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 2, 3, stride=1, dilation=1, output_padding=1)

    def forward(self, x):
        return self.up(x.view(x.shape[0], 3, 1, 1)).flatten(1)[:, :2]  # <-


def labels_out_of_range():
    step_of(small_net(), train_step)(X, [0, 10])  # <-


def leaked_tensor():
    leaked = []
    f = graphc.compile(lambda x: leaked.append(x * 2) or x)
    f(graphc.ones(2))
    return leaked[0] + 1  # <-


def embed_step(net, x, y):
    loss = F.cross_entropy(net(x).sum(1), y)  # <-
    loss.backward()
    return loss


def token_id_out_of_range():
    step_of(nn.Embedding(5, 2), embed_step)([[1, 2], [4, 7]], [0, 1])


COMPILED = [
    Row("compiled", "token id out of range", token_id_out_of_range, ExecutionError,
        ("index 7 is out of range for dimension 0 with size 5", "token ids in 0..num_embeddings-1"),
        embed_step),
    Row("compiled", "backward twice", compiled(backward_twice), AutogradError,
        ("backward through the graph a second time", "retain_graph=True", "while tracing step"),
        backward_twice),
    Row("compiled", "backward of a vector", compiled(backward_of_a_vector), AutogradError,
        ("only for scalar outputs", "loss.sum().backward()"), backward_of_a_vector),
    Row("compiled", "backward under no_grad", compiled(backward_under_no_grad), AutogradError,
        ("does not require grad", "outside graphc.no_grad()"), backward_under_no_grad),
    Row("compiled", "in-place update of a parameter", compiled(update_without_no_grad),
        AutogradError, ("in-place operation", "with graphc.no_grad():"),
        update_without_no_grad),
    Row("compiled", "ragged list argument", ragged_list_argument, ArgumentError,
        ("argument 'x' of step", "ragged", "(nested) list of numbers of one shape"),
        ragged_list_argument),
    Row("compiled", "uint8 numpy scalar argument", unsupported_numpy_scalar, ArgumentError,
        ("argument 'scale'", "dtype uint8 is not supported", "pass a tensor"),
        unsupported_numpy_scalar),
    Row("compiled", "unhashable argument", unhashable_argument, TraceError,
        ("argument 'opts'", "unhashable set", "or a tuple"), unhashable_argument),
    Row("compiled", "strings where a tensor goes", compiled(train_step, x=["a", "b"]),
        ArgumentError, ("argument 'input' must be a Tensor, not list", "graphc.tensor(...)"),
        train_step),
    Row("compiled", ".item() while tracing", compiled(item_inside), TraceError,
        (".item() needs the value of a tensor", "Return the tensor"), item_inside),
    Row("compiled", "if on a tensor value", compiled(if_on_a_value), TraceError,
        ("needs the value of a tensor", "graphc.where(cond, a, b)"), if_on_a_value),
    Row("compiled", "shape mismatch in the model",
        compiled(train_step, x=np.zeros((2, 400), np.float32), net=WrongLinear()), ShapeError,
        ("401", "400", "mat1 and mat2 shapes cannot be multiplied"), WrongLinear.forward),
    Row("compiled", "float64 input to a float32 model",
        compiled(train_step, x=np.zeros((2, 3))), ShapeError,
        ("input is float64 but the weight is float32", "convert the input with .float()"),
        train_step),
    Row("compiled", "transposed conv with too much output padding",
        compiled(train_step, net=BadDecoder()), ShapeError,
        ("output padding must be smaller than either stride or dilation",), BadDecoder.forward),
    Row("compiled", "label out of range", labels_out_of_range, ExecutionError,
        ("class index 10 is out of range", "valid: 0..1"), train_step),
    Row("compiled", "a traced tensor used outside", leaked_tensor, TraceError,
        ("used outside it", "return it from the function")),
]  # fmt: skip


# ---- the command line -----------------------------------------------------------------------


def usage(*argv: str) -> Callable[[], object]:
    return lambda: cli(*argv)


def nan_after_resume_setup() -> None:
    user_models()
    cli("train", *TINY, "--epochs", "1", "--model", "models.py:NanAfter5", "--checkpoint", "c")


def old_checkpoint_setup() -> None:
    user_models()
    graphc.save({"from": "an earlier run"}, "old.ckpt")


def train_checkpoint_setup() -> None:
    config = {"model": "convnet", "lr": 0.03, "optimizer": "sgd", "batch_size": 64}
    graphc.save({"kind": "graphc-train-checkpoint", "version": 1, "config": config}, "c.ckpt")


NAN_FIRST_EPOCH = ["--train-size", "224", "--model", "models.py:NanAfter5"]

TRAIN = [
    Row("cli train", "--lr nan", usage("train", "--lr", "nan"), USAGE,
        ("argument --lr: must be a finite number > 0, not nan",)),
    Row("cli train", "--lr inf", usage("train", "--lr", "inf"), USAGE,
        ("argument --lr: must be a finite number > 0, not inf",)),
    Row("cli train", "--lr negative", usage("train", "--lr=-0.1"), USAGE,
        ("argument --lr: must be a finite number > 0, not -0.1",)),
    Row("cli train", "--momentum 1.5", usage("train", "--momentum", "1.5"), USAGE,
        ("argument --momentum: must be a finite number in [0, 1), not 1.5",)),
    Row("cli train", "--weight-decay nan", usage("train", "--weight-decay", "nan"), USAGE,
        ("argument --weight-decay: must be a finite number >= 0, not nan",)),
    Row("cli train", "--epochs 0", usage("train", "--epochs", "0"), USAGE,
        ("argument --epochs: must be a whole number >= 1, not 0",)),
    Row("cli train", "--batch-size not a number", usage("train", "--batch-size", "6.5"), USAGE,
        ("argument --batch-size: expected a whole number >= 1, not '6.5'",)),
    Row("cli train", "--seed negative", usage("train", "--seed=-1"), USAGE,
        ("argument --seed: must be a whole number in [0, 9223372036854775807], not -1",)),
    Row("cli train", "--threads 0", usage("train", "--threads", "0"), USAGE,
        ("argument --threads: must be a whole number in [1, 512], not 0",)),
    Row("cli train", "--workers negative", usage("train", "--workers=-2"), USAGE,
        ("argument --workers: must be a whole number >= 0, not -2",)),
    Row("cli train", "--train-size 0", usage("train", "--train-size", "0"), USAGE,
        ("argument --train-size: must be a whole number >= 1, not 0",)),
    Row("cli train", "unknown --data", usage("train", "--data", "imagenet"), TrainError,
        ("not 'imagenet'", "--data must be one of builtin, cifar10:DIR, mnist:DIR")),
    Row("cli train", "--seq-len 0", usage("train", "--seq-len", "0"), USAGE,
        ("argument --seq-len: must be a whole number >= 1, not 0",)),
    Row("cli train", "text folder without train.tsv", usage("train", "--data", "text:."),
        DataError, ("no train.tsv or train.txt found", "`label<TAB>text`")),
    Row("cli train", "missing CIFAR-10 folder", usage("train", "--data", "cifar10:nowhere"),
        DataError, ("does not exist", "cifar-10-python.tar.gz"), "nowhere"),
    Row("cli train", "missing model file", usage("train", "--model", "absent.py:Net"),
        TrainError, ("absent.py does not exist",)),
    Row("cli train", "model that does not fit the data",
        usage("train", *TINY, "--model", "models.py:Wide"), TrainError,
        ("does not accept the builtin data's 3x32x32 images", "choose a model for 3x32x32"),
        f"models.py:{WIDE_LINE}", user_models),
    Row("cli train", "--momentum with adam", usage("train", "--optimizer", "adam",
        "--momentum", "0.5"), TrainError, ("--momentum applies to --optimizer sgd",
        "leave --momentum out")),
    Row("cli train", "checkpoint in a missing folder",
        usage("train", "--checkpoint", "runs/c.ckpt"), TrainError,
        ("the directory", "does not exist; create it first"), "runs"),
    Row("cli train", "--resume without a checkpoint", usage("train", "--resume"), TrainError,
        ("there is no checkpoint graphc-train.ckpt", "run without --resume")),
    Row("cli train", "loss turns nan after a resume",
        usage("train", "--resume", "--epochs", "2", "--checkpoint", "c"), TrainError,
        ("the loss is nan at epoch 2, step 3/3", "Stopped without saving",
         "the last good checkpoint, c (end of epoch 1, resumed from), is left as it was",
         "--continue-on-nan"), None, nan_after_resume_setup),
    Row("cli train", "loss turns nan in the first epoch",
        usage("train", *TINY, *NAN_FIRST_EPOCH, "--checkpoint", "old.ckpt"), TrainError,
        ("the loss is nan at epoch 1, step 6/7", "no checkpoint of this run was written",
         "old.ckpt is untouched", "smaller --lr"), None, old_checkpoint_setup),
]  # fmt: skip

INSPECT = [
    Row("cli inspect", "--lr nan", usage("inspect", "convnet", "--train", "--lr", "nan"),
        USAGE, ("argument --lr: must be a finite number > 0, not nan",)),
    Row("cli inspect", "--profile 0", usage("inspect", "convnet", "--profile", "0"), USAGE,
        ("argument --profile: must be a whole number >= 1, not 0",)),
    Row("cli inspect", "unknown pass", usage("inspect", "convnet", "--after", "fusion"),
        InspectError, ("unknown pass 'fusion'", "--after takes one of")),
    Row("cli inspect", "unreadable input shape",
        usage("inspect", "convnet", "--input-shape", "64xAx32x32"), InspectError,
        ("not '64xAx32x32'", "like 64x3x32x32")),
    Row("cli inspect", "a step that reads a value",
        usage("inspect", "models.py:step", "--input-shape", "4x3,4x3"), TraceError,
        ("needs the value of a tensor", "graphc.where(cond, a, b)"),
        f"models.py:{STEP_IF_LINE}", user_models),
    Row("cli inspect", "a model that does not fit the shape",
        usage("inspect", "models.py:Wide", "--input-shape", "4x3x32x32"), InspectError,
        ("does not accept --input-shape 4x3x32x32", "expects 100"), f"models.py:{WIDE_LINE}",
        user_models),
]  # fmt: skip

CHECK = [
    Row("cli check", "--rtol nan", usage("check", "convnet", "--rtol", "nan"), USAGE,
        ("argument --rtol: must be a finite number >= 0, not nan",)),
    Row("cli check", "--steps 0", usage("check", "convnet", "--steps", "0"), USAGE,
        ("argument --steps: must be a whole number >= 1, not 0",)),
    Row("cli check", "no target", usage("check"), InspectError,
        ("give a TARGET", "see graphc check -h")),
    Row("cli check", "--train with --inference",
        usage("check", "convnet", "--train", "--inference"), InspectError,
        ("--train and --inference exclude each other",)),
]  # fmt: skip

BENCH = [
    Row("cli bench", "--lr nan", usage("bench", "--lr", "nan"), USAGE,
        ("argument --lr: must be a finite number > 0, not nan",)),
    Row("cli bench", "--timeout inf", usage("bench", "--timeout", "inf"), USAGE,
        ("argument --timeout: must be a finite number > 0, not inf",)),
    Row("cli bench", "--warmup negative", usage("bench", "--warmup=-1"), USAGE,
        ("argument --warmup: must be a whole number >= 0, not -1",)),
    Row("cli bench", "--batch-size 0", usage("bench", "--batch-size", "0"), USAGE,
        ("argument --batch-size: expected positive integers: '0'",)),
    Row("cli bench", "--no-train alone", usage("bench", "--no-train"), BenchError,
        ("nothing to run", "--no-train needs --inference")),
]  # fmt: skip

EXPORT = [
    Row("cli export", "a text model", usage("export", "--model", "lstm", "-o", "out"),
        TrainError, ("reads token ids", "image classifiers only", "graphc train")),
    Row("cli export", "the autoencoder",
        usage("export", "--model", "autoencoder", "--train", "-o", "out"), TrainError,
        ("reconstruct its input", "image classifiers only", "graphc train")),
    Row("cli export", "--batch-size 0", usage("export", "--batch-size", "0", "-o", "out"),
        TrainError, ("--batch-size must be at least 1",)),
]  # fmt: skip


# ---- data readers ---------------------------------------------------------------------------


def cifar_batch(n: int) -> dict:
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"data": data, b"labels": [int(v) for v in rng.integers(0, 10, n)]}


def cifar_folder(damage: Callable[[Path], None] | None = None) -> Callable[[], None]:
    def setup() -> None:
        folder = Path("cifar-10-batches-py")
        folder.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(pickle.dumps(cifar_batch(3), protocol=2))
        if damage:
            damage(folder)

    return setup


class RunsCode:
    """Unpickling this opens (creates) a file: what a malicious batch would do."""

    def __reduce__(self):
        return (open, ("pwned", "w"))


def malicious(folder: Path) -> None:
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": RunsCode()}, protocol=2))


def truncated(folder: Path) -> None:
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])


def short_rows(folder: Path) -> None:
    batch = cifar_batch(3)
    batch[b"data"] = batch[b"data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))


def idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def mnist_folder(images: bytes | None = None) -> Callable[[], None]:
    def setup() -> None:
        for prefix, n in (("train", 5), ("t10k", 3)):
            Path(f"{prefix}-images-idx3-ubyte").write_bytes(idx(np.zeros((n, 28, 28))))
            Path(f"{prefix}-labels-idx1-ubyte").write_bytes(idx(np.zeros(n)))
        if images is not None:
            Path("train-images-idx3-ubyte").write_bytes(images)

    return setup


def read_cifar() -> object:
    return CIFAR10(".", train=True)


def text_folder(train: bytes, test: bytes = b"pos\tfine\n") -> Callable[[], None]:
    def setup() -> None:
        Path("train.tsv").write_bytes(train)
        Path("test.tsv").write_bytes(test)

    return setup


DATA = [
    Row("data", "text line without a tab", lambda: TextClassification("."), DataError,
        ("expected `label<TAB>text`", "a label, a tab character, then the text"), "train.tsv:2",
        text_folder(b"pos\tgreat\nneg terrible\n")),
    Row("data", "test label the training file lacks",
        lambda: TextClassification(".", train=False), DataError,
        ("label(s) ['neutral'] do not occur", "the classes are the training file's"), "test.tsv",
        text_folder(b"pos\tgreat\n", b"neutral\tso so\n")),
    Row("data", "text file not UTF-8", lambda: TextClassification("."), DataError,
        ("not UTF-8 text", "save the file as UTF-8"), "train.tsv:1",
        text_folder(b"pos\t\xff\xfe\n")),
    Row("data", "CIFAR-10 batch that runs code", read_cifar, DataError,
        ("was refused", "asks for"), "data_batch_2", cifar_folder(malicious)),
    Row("data", "truncated CIFAR-10 batch", read_cifar, DataError,
        ("is truncated or corrupt", "cifar-10-python"), "data_batch_3", cifar_folder(truncated)),
    Row("data", "CIFAR-10 rows of the wrong size", lambda: CIFAR10(".", train=False), DataError,
        ("100 values, expected 3072",), "test_batch", cifar_folder(short_rows)),
    Row("data", "CIFAR-10 not there", lambda: CIFAR10("nowhere"), DataError,
        ("does not exist", "cifar-10-python.tar.gz"), "nowhere"),
    Row("data", "MNIST not there", lambda: MNIST("none"), DataError,
        ("MNIST not found", "train-images"), "none"),
    Row("data", "truncated MNIST images", lambda: MNIST("."), DataError,
        ("is truncated", "header promises"), "train-images-idx3-ubyte",
        mnist_folder(idx(np.zeros((5, 28, 28)))[:-100])),
    Row("data", "MNIST file that is not IDX", lambda: MNIST("."), DataError,
        ("not an IDX file",), "train-images-idx3-ubyte", mnist_folder(b"PK\x03\x04" + bytes(99))),
    Row("data", "MNIST images and labels disagree", lambda: MNIST("."), DataError,
        ("4 images but", "5 labels"), "train-images-idx3-ubyte",
        mnist_folder(idx(np.zeros((4, 28, 28))))),
]  # fmt: skip


# ---- checkpoints ----------------------------------------------------------------------------


def saved(damage: Callable[[bytes], bytes] | None = None) -> Callable[[], None]:
    def setup() -> None:
        graphc.save({"w": graphc.randn(64), "epoch": 2}, "good.ckpt")
        if damage:
            Path("good.ckpt").write_bytes(damage(Path("good.ckpt").read_bytes()))

    return setup


def flip_a_byte(raw: bytes) -> bytes:
    return raw[:-10] + bytes([raw[-10] ^ 0x40]) + raw[-9:]


def save_a_set_over_a_good_file():
    graphc.save({"w": graphc.ones(2), "tags": {"a", "b"}}, "good.ckpt")  # <-


def save_into_a_missing_folder():
    graphc.save({"w": graphc.ones(2)}, "runs/x.ckpt")


def load_good() -> object:
    return graphc.load("good.ckpt")


CHECKPOINTS = [
    Row("checkpoint", "truncated file", load_good, DataError,
        ("is not a readable graphc checkpoint", "use the previous checkpoint"), "good.ckpt",
        saved(lambda raw: raw[: len(raw) // 2])),
    Row("checkpoint", "a flipped byte", load_good, DataError,
        ("checksum of its data does not match", "use the previous checkpoint"), "good.ckpt",
        saved(flip_a_byte)),
    Row("checkpoint", "a text file", load_good, DataError,
        ("is not a readable graphc checkpoint", "save it again"), "good.ckpt",
        saved(lambda raw: b"these are not tensors, just words in a text file\n")),
    Row("checkpoint", "missing file", lambda: graphc.load("nope.ckpt"), DataError,
        ("does not exist", "check the path"), "nope.ckpt"),
    Row("checkpoint", "a directory", lambda: graphc.load("."), DataError,
        ("is a directory, not a checkpoint file", "pass the file inside it")),
    Row("checkpoint", "unsupported value over a good file", save_a_set_over_a_good_file,
        ArgumentError, ("cannot store a set (at /tags)", "convert it to one of those first"),
        save_a_set_over_a_good_file, saved()),
    Row("checkpoint", "save into a missing folder", save_into_a_missing_folder, DataError,
        ("does not exist", "create it first"), "runs"),
    Row("checkpoint", "resume from a damaged checkpoint",
        usage("train", "--resume", "--checkpoint", "good.ckpt"), DataError,
        ("checksum of its data does not match", "use the previous checkpoint"), "good.ckpt",
        saved(flip_a_byte)),
    Row("checkpoint", "resume from a file that is not a train checkpoint",
        usage("train", "--resume", "--checkpoint", "good.ckpt"), DataError,
        ("not a `graphc train` checkpoint", "pass the checkpoint that graphc train wrote"),
        "good.ckpt", saved()),
    Row("checkpoint", "resume with another --lr",
        usage("train", "--resume", "--checkpoint", "c.ckpt", "--lr", "0.1"), TrainError,
        ("--lr 0.1 differs from the checkpoint", "leave --lr out"), "c.ckpt",
        train_checkpoint_setup),
]  # fmt: skip


# ---- the compile cache ----------------------------------------------------------------------


def compile_fresh(scale: float) -> tuple[np.ndarray, str]:
    """A new compiled function (no in-process reuse): its result and whether the machine code
    came from the cache ("hit", by the trace or by the optimised graph) or was built
    ("miss")."""
    f = graphc.compile(lambda x: (x * scale).relu() + 1)
    out = f(graphc.tensor([-1.0, 2.0]))  # <-
    how = f.last.executable.timings["cache"]
    return out.numpy(), "hit" if how.startswith("hit") else how


def cache_path_is_a_file():
    Path("cache").write_text("my notes, not a cache\n")


def compile_with_the_cache_a_file():
    with environ(GRAPHC_CACHE_DIR=str(Path("cache").resolve())):
        out, _ = compile_fresh(3.5)
    np.testing.assert_array_equal(out, [1.0, 8.0])  # still right, only not cached


def rebuilt_after(damage: Callable[[bytes], bytes]) -> Callable[[], None]:
    """Fills the cache, damages every entry, and checks the next compile rebuilds them."""

    def act() -> None:
        cache, scale = Path.cwd().parent / "cache", 2.5  # outside the working directory
        with environ(GRAPHC_CACHE_DIR=str(cache)):
            assert compile_fresh(scale)[1] == "miss"  # an empty cache
            entries = sorted(cache.rglob("*.o"))
            assert entries, "the first compile stored nothing"
            for path in entries:
                path.write_bytes(damage(path.read_bytes()))
            out, how = compile_fresh(scale)
            assert how == "miss"  # damaged entries are never loaded
            np.testing.assert_allclose(out, [1.0, 2.0 * scale + 1], rtol=1e-6)
            assert compile_fresh(scale)[1] == "hit"  # and were stored again, whole

    return act


CACHE_ROWS = [
    Row("cache", "cache path is a file", compile_with_the_cache_a_file, GraphcWarning,
        ("cannot write its compile cache", "it is a file, not a directory",
         "Set GRAPHC_CACHE_DIR to a writable directory"), compile_fresh, cache_path_is_a_file),
    Row("cache", "entries with a flipped byte", rebuilt_after(flip_a_byte), None),
    Row("cache", "truncated entries", rebuilt_after(lambda raw: raw[: len(raw) // 3]), None),
    Row("cache", "empty entries", rebuilt_after(lambda raw: b""), None),
]  # fmt: skip

ROWS = API + COMPILED + TRAIN + INSPECT + CHECK + BENCH + EXPORT + DATA + CHECKPOINTS + CACHE_ROWS


# ---- running the table ----------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"  # the cache rows repair tmp_path / "cache", outside it
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def outcome(row: Row, capsys) -> str:
    """Runs the row's act; returns the message of what it raised or warned (with the
    warning's location), after checking its class."""
    if row.error is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphcWarning)  # repaired means: no warning either
            row.act()
        return ""
    if issubclass(row.error, Warning):
        with pytest.warns(row.error) as record:
            row.act()
        return "\n".join(f"{w.filename}:{w.lineno}: {w.message}" for w in record)
    with pytest.raises(row.error) as err:
        row.act()
    if row.error is USAGE:
        assert err.value.code == 2
        return capsys.readouterr().err
    assert type(err.value) is row.error, f"raised {type(err.value).__name__}: {err.value}"
    return str(err.value)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.area}: {r.name}" for r in ROWS])
def test_bad_input(row: Row, workspace: Path, capsys) -> None:
    if row.setup:
        row.setup()
    capsys.readouterr()
    before = snapshot(workspace)
    message = outcome(row, capsys)
    for fragment in row.says:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    if callable(row.at):
        assert f"{HERE}:{marked_line(row.at)}" in message, message
    elif row.at is not None:
        assert row.at in message, message
    assert "Traceback" not in message
    if row.area.startswith("cli") and row.error not in (USAGE, None):
        assert issubclass(row.error, GraphcError)  # main() prints these as one line
    assert snapshot(workspace) == before, "the working directory changed"


def test_the_table_covers_every_area():
    counts = Counter(r.area for r in ROWS)
    areas = {"api", "compiled", "cli train", "cli inspect", "cli check", "cli bench", "data"}
    assert areas | {"checkpoint", "cache"} <= set(counts)
    assert len(ROWS) >= 40
    assert len({(r.area, r.name) for r in ROWS}) == len(ROWS)  # ids are unique


def test_main_prints_a_row_error_as_one_line(workspace, capsys):
    assert graphc_cli.main(["train", "--data", "imagenet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("graphc train: error: --data must be one of") and err.count("\n") == 1


# ---- beyond the table: what the rows cannot show ----------------------------------------------


def test_continue_on_nan_trains_on_with_a_warning(workspace, capsys):
    user_models()
    args = [*TINY, "--epochs", "2", "--model", "models.py:NanAfter5", "--continue-on-nan"]
    assert graphc_cli.main(["train", *args, "--log-json", "log.json"]) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == [
        "graphc train: warning: the loss is nan at epoch 2, step 3/3; training on "
        "(--continue-on-nan)"
    ]
    assert "epoch 2/2: train loss nan" in out and out.splitlines()[-1].startswith("done:")
    assert graphc.load("graphc-train.ckpt")["epoch"] == 2  # both epochs ran and were saved


def test_continue_on_nan_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        graphc_cli.main(["train", "--help"])
    assert "--continue-on-nan" in capsys.readouterr().out


READ_ONLY_CHILD = """
import json, os, sys, warnings
import numpy as np
import graphc

ro, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.environ["GRAPHC_DISABLE_CACHE"] = "1"  # as root: every lazy import and the thread pool
graphc.compile(lambda x: x + 1)(graphc.ones(2))
del os.environ["GRAPHC_DISABLE_CACHE"]
try:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
except PermissionError as e:
    print(json.dumps({"dropped": False, "why": str(e)}))
    sys.exit(0)
os.environ["GRAPHC_CACHE_DIR"] = ro
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = graphc.compile(lambda x: (x * 3.25).relu() - 1)(graphc.tensor([-1.0, 2.0]))
print(json.dumps({
    "dropped": True,
    "euid": os.geteuid(),
    "writable": os.access(ro, os.W_OK),
    "out": out.numpy().tolist(),
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
}))
"""


def test_a_read_only_cache_directory_as_a_user(tmp_path):
    """As root, permissions do not stop writes: a child drops to `nobody` after importing
    (it cannot exec Python from root's home as nobody). As another user, chmod is enough."""
    import json
    import pwd

    base = Path(tempfile.mkdtemp(prefix="graphc-ro-"))  # /tmp: reachable by nobody
    try:
        base.chmod(0o755)
        ro = base / "cache"
        ro.mkdir()
        ro.chmod(0o555)
        if os.geteuid() != 0:
            with environ(GRAPHC_CACHE_DIR=str(ro)), pytest.warns(GraphcWarning) as record:
                out = graphc.compile(lambda x: (x * 3.25).relu() - 1)(graphc.tensor([-1.0, 2.0]))
            result = {"out": out.numpy().tolist(), "writable": os.access(ro, os.W_OK)}
            result["warnings"] = [f"GraphcWarning: {w.message}" for w in record]
        else:
            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("running as root and there is no `nobody` user to drop to")
            env = dict(os.environ, GRAPHC_COMPILE_JOBS="1", GRAPHC_NUM_THREADS="1")
            proc = subprocess.run(
                [sys.executable, "-c", READ_ONLY_CHILD, str(ro), str(nobody.pw_uid),
                 str(nobody.pw_gid)],
                capture_output=True, text=True, timeout=300, cwd=base, env=env,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            result = json.loads(proc.stdout.splitlines()[-1])
            if not result["dropped"]:
                pytest.skip(f"running as root but cannot drop privileges: {result['why']}")
            assert result["euid"] == nobody.pw_uid
        assert result["writable"] is False  # the directory really is read-only to the user
        assert result["out"] == [-1.0, 5.5]  # compiled and right, only not cached
        assert len(result["warnings"]) == 1
        warning = result["warnings"][0]
        assert "GraphcWarning: graphc cannot write its compile cache in " + str(ro) in warning
        assert "Permission denied" in warning and "GRAPHC_DISABLE_CACHE=1" in warning
        assert list(ro.iterdir()) == []  # nothing written
    finally:
        (base / "cache").chmod(0o755)
        shutil.rmtree(base)
