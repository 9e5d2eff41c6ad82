"""Export a model as a shared library with a C header, to run without Python.

Without --train: the model's forward in eval mode, NAME_forward(ctx, inputs, outputs).
With --train: a whole training step (forward, cross-entropy loss, backward, the optimizer's
update), NAME_step(ctx, inputs, labels, lr, loss), with the optimizer options of graphc
train. The library takes batches of exactly --batch-size; inputs are what the model takes
(graphc train normalises inside its own step; a library leaves that to the caller).

Writes DIR/libNAME.so, DIR/NAME.h (the C interface, documented) and DIR/NAME.json (the ABI
as data). Needs a C compiler (cc, gcc or clang; $CC) to build; the library needs none.

examples:
  graphc export -o out                                  # convnet forward, batch 64
  graphc export --train --batch-size 64 -o out          # convnet training step (SGD)
  graphc export --model my_models.py:Net --input-shape 1,28,28 --train -o out
  graphc export --train --weights graphc-train.ckpt --target avx2 -o out
  cc app.c -I out -L out -lconvnet -Wl,-rpath,out       # then, in C
"""

from __future__ import annotations

import argparse

from graphc.training.config import DEFAULT_LR, OPTIMIZERS

HELP = "write a model or training step as a C library (libNAME.so + NAME.h)"
TARGETS = ("host", "avx512", "avx2", "generic")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="convnet",
        metavar="NAME|FILE.py:Class",
        help="convnet, lenet5, mlp, resnet20, mobilenet, or a graphc.nn.Module class in your "
        "file that classifies float images (default: convnet)",
    )
    p.add_argument("--train", action="store_true", help="export a training step, not a forward")
    p.add_argument("--batch-size", type=int, default=64, help="images per call (default: 64)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where to write")
    p.add_argument("--name", help="the C prefix: NAME_create, libNAME.so (default: the model's)")
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="one sample's shape (default: the built-in model's, else 3,32,32)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default=None,
        help="instruction set: host (this CPU, all of it; the default, same numbers as "
        "graphc.compile here), or avx512, avx2, generic to run on other x86-64 machines",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="1: a serial build without pthreads; N: N threads by default "
        "(default: the cores of the machine the library runs on)",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="initial weights: a graphc train checkpoint (with its optimizer state) or a "
        "saved state_dict (default: the model's fresh initialisation)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="(default: sgd)")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    p.add_argument("--lr", type=float, help=f"the exported lr (default: {lrs})")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, help="(default: the optimizer's own default)")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import graphc
    import graphc.nn as nn
    from graphc.models import INPUT_SHAPES, MODELS
    from graphc.training.build import build_optimizer, resolve_model_class
    from graphc.training.config import TrainConfig, TrainError

    if args.batch_size < 1:
        raise TrainError("--batch-size must be at least 1")
    cls, origin = resolve_model_class(args.model)
    _check_exportable(cls, origin)
    shape = _shape(args.input_shape) or INPUT_SHAPES.get(args.model, (3, 32, 32))
    graphc.manual_seed(args.seed)
    try:
        net = cls()
    except Exception as e:
        raise TrainError(f"could not construct {cls.__name__}() from {origin}: {e}") from None
    ckpt = _weights(args.weights, net) if args.weights else None
    classes = _classes(net, shape, origin)
    x = graphc.from_numpy(np.zeros((args.batch_size, *shape), np.float32))
    name = args.name or (args.model if args.model in MODELS else cls.__name__.lower())
    if args.train:
        config = TrainConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        ).resolved()
        optimizer = build_optimizer(config, net)
        if isinstance(ckpt, dict) and "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        criterion = nn.CrossEntropyLoss()
        net.train()

        def train_step(inputs, labels):
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            return loss

        y = graphc.from_numpy(np.zeros(args.batch_size, np.int64))
        result = graphc.export(
            train_step, x, y, path=args.output, name=name, target=args.target, threads=args.threads
        )
        what = f"a training step of {cls.__name__} ({config.optimizer}, lr {config.lr:g})"
    else:
        net.eval()
        result = graphc.export(
            net, x, path=args.output, name=name, target=args.target, threads=args.threads
        )
        what = f"the forward of {cls.__name__} ({classes} outputs)"
    kib = result.size / 1024
    print(f"wrote {what}, batch {args.batch_size}, target {result.target}:")
    print(f"  {result.library} ({kib:.0f} KiB)")
    print(f"  {result.header}")
    print(f"  {result.abi}")
    print(f"in {result.seconds:.2f} s; build a program with")
    print(f"  cc app.c -I {args.output} -L {args.output} -l{name} -Wl,-rpath,{args.output}")
    return 0


def _check_exportable(cls: type, origin: str) -> None:
    """The C ABI takes float32 images and int64 labels and returns logits: refuse, before any
    work, a model that reads token ids or is trained to reconstruct its input."""
    from graphc.models import takes_tokens
    from graphc.training.config import TrainError
    from graphc.training.objective import RECONSTRUCTION, objective_of

    if takes_tokens(cls):
        why = "reads token ids (int64), but an exported library takes float32 images"
    elif objective_of(cls) == RECONSTRUCTION:
        why = "is trained to reconstruct its input, but an exported library trains a classifier"
    else:
        return
    raise TrainError(
        f"the model {origin} {why}; graphc export writes image classifiers only for now. "
        "Train it with graphc train, or export a classifier (convnet, lenet5, mlp, resnet20, "
        "mobilenet)"
    )


def _shape(text: str | None) -> tuple[int, ...] | None:
    from graphc.training.config import TrainError

    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise TrainError(f"--input-shape {text!r}: expected positive sizes like 3,32,32")
    return shape


def _weights(path: str, net):
    """Loads a state_dict or a graphc train checkpoint into net; returns what was read."""
    import graphc
    from graphc.training.config import TrainError

    ckpt = graphc.load(path)
    state = ckpt.get("model") if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(state, dict):
        raise TrainError(f"--weights {path}: not a state_dict or a graphc train checkpoint")
    net.load_state_dict(state)
    return ckpt


def _classes(net, shape: tuple[int, ...], origin: str) -> int:
    """The model's outputs per sample, from an eager forward of two zero images."""
    import numpy as np

    import graphc
    from graphc.errors import GraphcError
    from graphc.training.config import TrainError

    was_training = net.training
    net.eval()
    try:
        with graphc.no_grad():
            out = net(graphc.from_numpy(np.zeros((2, *shape), np.float32)))
    except GraphcError as e:
        raise TrainError(
            f"the model {origin} does not accept inputs of shape {list(shape)} per sample:\n"
            f"  {e}\n  pass --input-shape"
        ) from None
    finally:
        net.train(was_training)
    if not isinstance(out, graphc.Tensor) or out.ndim != 2:
        raise TrainError(f"the model {origin} must return logits of shape [N, classes]")
    return int(out.shape[1])
