"""What `graphc inspect` and `graphc check` compile: TARGET resolved to a step and its inputs.

TARGET is
- a built-in model name (convnet, lenet5, mlp, resnet20, transformer, lstm, mobilenet,
  autoencoder): its batch shape defaults to 64 inputs of the model's input size;
- FILE.py:Class, a graphc.nn.Module with a no-argument constructor (needs --input-shape);
- FILE.py:function, compiled as written (a training step that calls backward() and step()
  is inspected as one), called with one random float32 tensor per --input-shape (several
  shapes separated by commas).

A Module is compiled for inference (eval mode, no gradients) or, with --train, as the whole
training step: cross-entropy on labels drawn for the model's number of classes (or, for a
model that reconstructs its input, the mean squared error against the input), backward and
an optimizer step. The step's own lines (loss, backward, step) are compiled from the template
below under the file name "<graphc train_step>", so every node's location is real and the
ones that are not the user's say so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.inspection.common import InspectError
from graphc.training.objective import RECONSTRUCTION, criterion, objective_of

STEPS = """
def train_step(inputs, labels):
    optimizer.zero_grad()
    loss = criterion(net(inputs), labels)
    loss.backward()
    optimizer.step()
    return loss


def inference(inputs):
    with graphc.no_grad():
        return net(inputs)
"""
OPTIMIZERS = ("sgd", "adam", "adamw")
SEED = 0


@dataclass
class Target:
    spec: str
    mode: str  # "train", "inference" or "function"
    compiled: object  # a graphc CompiledFunction
    args: tuple

    def inspection(self):
        return self.compiled.inspect(*self.args)


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """ "64x3x32x32" -> [(64, 3, 32, 32)]; "8x4,8" -> [(8, 4), (8,)]."""
    shapes = []
    for part in text.split(","):
        dims = part.strip().lower().split("x")
        if not all(d.isdigit() and int(d) > 0 for d in dims):
            raise InspectError(
                f"--input-shape must be positive sizes joined by x, like 64x3x32x32 (several "
                f"inputs: separate them with commas), not {text!r}"
            )
        shapes.append(tuple(int(d) for d in dims))
    return shapes


def resolve(
    spec: str,
    input_shape: str | None = None,
    train: bool | None = False,
    optimizer: str | None = None,
    lr: float | None = None,
) -> Target:
    """`train`: True/False for a Module's training step or inference; None: the training
    step for a Module, and a function as written."""
    import graphc
    from graphc.models import INPUT_SHAPES, MODELS
    from graphc.nn import Module

    hyper = optimizer is not None or lr is not None
    if train is False and hyper:
        raise InspectError("--optimizer and --lr apply to the training step: add --train")
    shapes = parse_shapes(input_shape) if input_shape is not None else None
    graphc.manual_seed(SEED)
    module_train = train is not False
    if spec in MODELS:
        shape = shapes[0] if shapes else (64, *INPUT_SHAPES[spec])
        return _module_target(spec, MODELS[spec], shape, shapes, module_train, optimizer, lr)
    obj, origin = _load(spec, MODELS)
    if inspect.isclass(obj) and issubclass(obj, Module):
        if shapes is None:
            raise InspectError(
                f"{spec} is a Module: give the batch shape its forward() takes, e.g. "
                "--input-shape 64x3x32x32"
            )
        return _module_target(spec, obj, shapes[0], shapes, module_train, optimizer, lr)
    if inspect.isclass(obj) or not callable(obj):
        raise InspectError(
            f"{origin} is a {type(obj).__name__}, not a graphc.nn.Module class or a function"
        )
    if train or hyper:
        raise InspectError(
            f"--train, --optimizer and --lr build a training step around a Module; {origin} "
            "is a function and is compiled as written (leave them out)"
        )
    return _function_target(spec, obj, origin, shapes)


def _load(spec: str, models) -> tuple[object, str]:
    path_text, sep, name = spec.rpartition(":")
    if not sep or not name or not path_text.endswith(".py"):
        raise InspectError(
            f"TARGET must be one of {', '.join(models)}, FILE.py:Class or FILE.py:function, "
            f"not {spec!r}"
        )
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InspectError(f"TARGET {spec}: {path} is not a file")
    module_name = "graphc_target_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise InspectError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, name):
        found = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == module_name
        ]
        hint = f"; it defines {', '.join(found)}" if found else ""
        raise InspectError(f"{path} has no {name}{hint}")
    return getattr(module, name), f"{path}:{name}"


def _module_target(spec, cls, shape, shapes, train, optimizer, lr) -> Target:
    import graphc
    import graphc.nn as nn

    if shapes is not None and len(shapes) > 1:
        raise InspectError(f"{spec} takes one batch: give one --input-shape, not {len(shapes)}")
    try:
        net = cls()
    except Exception as e:
        raise InspectError(
            f"could not construct {spec}(): {type(e).__name__}: {e} (the class needs a "
            "constructor that takes no arguments)"
        ) from None
    from graphc.models import sample_inputs

    x = graphc.from_numpy(sample_inputs(cls, tuple(shape[1:]), shape[0], SEED))
    namespace = {"graphc": graphc, "net": net}
    out_shape = _output_shape(spec, net, shape)
    reconstruct = objective_of(cls) == RECONSTRUCTION
    if train:
        if reconstruct:  # the target is the input itself
            labels = None
        else:
            classes = _num_classes(spec, out_shape)
            labels = np.random.default_rng(SEED + 1).integers(0, classes, shape[0])
        namespace["criterion"] = criterion(nn, objective_of(cls))
        namespace["optimizer"] = _optimizer(net, optimizer or "sgd", lr)
    exec(compile(STEPS, "<graphc train_step>", "exec"), namespace)
    if train:
        step = graphc.compile(namespace["train_step"])
        target = x if labels is None else graphc.from_numpy(labels)
        return Target(spec, "train", step, (x, target))
    net.eval()
    return Target(spec, "inference", graphc.compile(namespace["inference"]), (x,))


def _output_shape(spec: str, net, shape) -> tuple[int, ...] | None:
    """The model's output shape for two samples, from an eager forward in eval mode (no
    running statistic changes), so a wrong --input-shape is reported in its terms."""
    import graphc
    from graphc.errors import GraphcError
    from graphc.models import sample_inputs

    was_training = net.training
    net.eval()
    try:
        with graphc.no_grad():
            out = net(graphc.from_numpy(sample_inputs(type(net), tuple(shape[1:]), 2)))
    except GraphcError as e:
        shape_text = "x".join(map(str, shape))
        raise InspectError(f"{spec} does not accept --input-shape {shape_text}:\n  {e}") from None
    finally:
        net.train(was_training)
    return tuple(out.shape) if isinstance(out, graphc.Tensor) else None


def _num_classes(spec: str, out_shape: tuple[int, ...] | None) -> int:
    """Classes = the logits' last size; --train needs [N, classes] logits."""
    if out_shape is None or len(out_shape) != 2:
        got = list(out_shape) if out_shape is not None else "something that is not a tensor"
        raise InspectError(
            f"--train trains with cross-entropy on class logits, but {spec} returns {got} for "
            "2 samples (expected [2, classes]); inspect it without --train, or write the step "
            "as a function and inspect FILE.py:function"
        )
    return int(out_shape[1])


def _optimizer(net, name: str, lr: float | None):
    import graphc.optim as optim
    from graphc.training.config import DEFAULT_LR

    name = name.lower()
    if name not in OPTIMIZERS:
        raise InspectError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if not (math.isfinite(lr) and lr > 0):
        raise InspectError(f"--lr must be a finite number > 0, not {lr}")
    if name == "sgd":
        return optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    return (optim.Adam if name == "adam" else optim.AdamW)(net.parameters(), lr=lr)


def _function_target(spec: str, fn, origin: str, shapes) -> Target:
    import graphc
    from graphc.frontend.compile import CompiledFunction, CompiledModule

    if isinstance(fn, CompiledModule):
        fn = fn._compiled
    compiled = fn if isinstance(fn, CompiledFunction) else graphc.compile(fn)
    wanted = _required_positional(compiled.fn)
    shapes = shapes or []
    if wanted is not None and len(shapes) != wanted:
        need = f"{wanted} input shape(s)" if wanted else "no --input-shape"
        raise InspectError(
            f"{origin} takes {wanted} tensor argument(s): give {need} (e.g. --input-shape "
            "8x4,8x4 for two)"
        )
    rng = np.random.default_rng(SEED)
    args = tuple(graphc.from_numpy(rng.standard_normal(s, dtype=np.float32)) for s in shapes)
    return Target(spec, "function", compiled, args)


def _required_positional(fn) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is p.empty)
