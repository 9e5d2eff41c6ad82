"""graphc: a deep-learning framework that is a compiler.

PyTorch-style code (nn.Module, loss.backward(), optimizer.step()) runs eagerly on numpy, or,
under @graphc.compile, is traced into a typed IR graph, differentiated symbolically,
optimised and run as one compiled call per training step.
"""

from graphc import dtypes
from graphc.contraction import addmm, baddbmm, bmm, einsum
from graphc.device import backends, cuda, device
from graphc.dispatch import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from graphc.dtypes import bool_ as bool  # noqa: A001  (torch.bool)
from graphc.dtypes import float32, float64, int32, int64
from graphc.errors import DataError, GraphcError, ShapeError, StateDictError, TraceError
from graphc.functions import (
    abs,
    add,
    all,
    amax,
    amin,
    any,
    arange,
    argmax,
    argmin,
    as_tensor,
    cat,
    clamp,
    clamp_max,
    clamp_min,
    clip,
    concat,
    div,
    empty,
    eq,
    erf,
    exp,
    expm1,
    flatten,
    from_numpy,
    full,
    full_like,
    ge,
    gt,
    le,
    log,
    log1p,
    log_softmax,
    lt,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mm,
    mul,
    ne,
    neg,
    ones,
    ones_like,
    permute,
    pow,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    relu,
    reshape,
    rsqrt,
    sigmoid,
    softmax,
    sqrt,
    square,
    squeeze,
    stack,
    std,
    sub,
    sum,
    t,
    tanh,
    tensor,
    transpose,
    unsqueeze,
    var,
    where,
    xlogy,
    zeros,
    zeros_like,
)
from graphc.indexing import (
    cumsum,
    gather,
    index_add,
    index_select,
    masked_fill,
    scatter_add,
    take_along_dim,
    tril,
    triu,
)
from graphc.loops import scan
from graphc.random import default_generator, manual_seed
from graphc.splitting import chunk, narrow, split, unbind
from graphc.tensor import Size, Tensor
from graphc.threads import get_num_threads, set_num_threads

float = float32  # noqa: A001
double = float64
long = int64
int = int32  # noqa: A001

__version__ = "0.1.0"


def compile(fn=None, **options):
    """Compiles a training step or inference function (or a Module); see frontend/compile.py."""
    from graphc.frontend.compile import compile as _compile

    return _compile(fn, **options)


def save(obj, f, pickle_module=None, pickle_protocol=None) -> None:
    """Saves a state dict (nested dicts/lists of tensors and numbers), atomically, no pickle.

    torch.save's spelling: `f` is a path (any name: "model.pt" works) or a binary file;
    the pickle arguments are accepted and unused, since nothing is pickled."""
    from graphc.serialization import save as _save

    _save(obj, f)


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None):
    """Loads what graphc.save wrote (or a plain safetensors file); see serialization.load."""
    from graphc.serialization import load as _load

    return _load(f, map_location, pickle_module, weights_only=weights_only, mmap=mmap)


def export(fn, *example_inputs, path, name=None, target=None, threads=None):
    """Writes a training step or an eval-mode model as a shared library with a C header
    (path/libNAME.so, NAME.h, NAME.json), run without Python; see graphc/capi/."""
    from graphc.capi import export as _export

    return _export(fn, *example_inputs, path=path, name=name, target=target, threads=threads)


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> int:
    return input.numel()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state) -> None:
    default_generator.set_state(state)


# Submodules users reach as attributes, as with torch.nn / torch.optim.
from graphc import nn, optim  # noqa: E402


def __getattr__(name: str):
    if name in ("data", "distributed", "models", "utils", "vision"):
        import importlib

        return importlib.import_module(f"graphc.{name}")
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
