"""Train a model with a compiled training step.

By default: the reference ConvNet on the built-in generated data set (nothing to download),
3 epochs of SGD. Progress goes to stderr (a bar on a terminal, lines otherwise), one summary
line per epoch to stdout. A checkpoint is written after every epoch and on Ctrl-C; --resume
continues from it exactly as if the run had not stopped.

The last batch of an epoch may be shorter: it is a second input shape, compiled once in the
first epoch and reused from then on (compiled steps are cached by input signature), never
padded or dropped. Its loss is the mean over its own samples, as in PyTorch, and an epoch's
loss weights each step by its batch size.

examples:
  graphc train
  graphc train --epochs 10 --plot curves.png --log-json run.json
  graphc train --data cifar10:~/data --optimizer adam --workers 2
  graphc train --data mnist:~/data/mnist --model my_models.py:SmallNet
  graphc train --model lstm                  # on the built-in text task
  graphc train --model transformer --data text:~/data/reviews --seq-len 64
  graphc train --resume                      # after Ctrl-C, or to add epochs: --epochs 5

A loss that becomes NaN or infinite stops the run at that step with exit status 1, naming
the epoch, the step and the last checkpoint that is still good (the diverged parameters are
never saved over it); --continue-on-nan trains on instead, warning once per epoch.
Numeric options must be finite and in range (--lr nan is a usage error).
"""

from __future__ import annotations

import argparse
import os

from graphc.commands import options
from graphc.training.config import DEFAULT_CHECKPOINT, DEFAULT_LR, OPTIMIZERS, TrainConfig

HELP = "train a model (default: the reference ConvNet on built-in data)"
_ = argparse.SUPPRESS  # an option left out is absent from args: `--resume` must know which


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument(
        "--model",
        default=_,
        metavar="NAME|FILE.py:Class",
        help="convnet, lenet5, mlp, resnet20, transformer, lstm, mobilenet, autoencoder, or a "
        "graphc.nn.Module class in your file (default: convnet; lenet5 for MNIST; transformer "
        "for text)",
    )
    p.add_argument(
        "--data",
        default=_,
        metavar="SPEC",
        help="builtin (generated images, no download), builtin-text (generated sentences "
        "whose class depends on word order), cifar10:DIR, mnist:DIR, or text:DIR (train.tsv "
        "and test.tsv, one `label<TAB>text` a line) (default: builtin; builtin-text for a "
        "text model)",
    )
    p.add_argument(
        "--epochs", type=options.count, default=_, help=f"total epochs (default: {d.epochs})"
    )
    p.add_argument(
        "--batch-size",
        type=options.count,
        default=_,
        help=f"images per step (default: {d.batch_size})",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=_, help="(default: sgd)")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    p.add_argument("--lr", type=options.positive, default=_, help=f"learning rate (default: {lrs})")
    p.add_argument(
        "--momentum",
        type=options.momentum,
        default=_,
        help="SGD momentum, in [0, 1) (default: 0.9)",
    )
    p.add_argument(
        "--weight-decay",
        type=options.non_negative,
        default=_,
        help="(default: the optimizer's own default)",
    )
    p.add_argument(
        "--workers",
        type=options.count_or_zero,
        default=_,
        help="loader threads preparing batches ahead of the step (default: 1 when the "
        "step's --threads leave a core free, else 0: loading then runs between steps)",
    )
    p.add_argument(
        "--seed", type=options.seed, default=_, help=f"seeds everything (default: {d.seed})"
    )
    p.add_argument(
        "--threads",
        type=options.threads,
        default=_,
        help="threads for compiled code (sets GRAPHC_NUM_THREADS; default: all cores)",
    )
    p.add_argument(
        "--checkpoint",
        default=_,
        metavar="PATH",
        help=f"checkpoint file, written every epoch and on Ctrl-C (default: {DEFAULT_CHECKPOINT})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        default=_,
        help="continue from --checkpoint with its settings",
    )
    p.add_argument("--plot", default=_, metavar="FILE.png", help="write loss and accuracy curves")
    p.add_argument("--log-json", default=_, metavar="FILE", help="write per-epoch results as JSON")
    p.add_argument(
        "--train-size",
        type=options.count,
        default=_,
        metavar="N",
        help="use N training images (builtin: generate N; default: 10,000 or the whole set)",
    )
    p.add_argument(
        "--test-size",
        type=options.count,
        default=_,
        metavar="N",
        help="use N test images (builtin: generate N; default: 2,000 or the whole set)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=_,
        help="random crop (padding 4) and horizontal flip (default: on for cifar10 only)",
    )
    p.add_argument(
        "--seq-len",
        type=options.count,
        default=_,
        metavar="N",
        help=f"text: tokens per sentence, padded or cut to it (default: {d.seq_len})",
    )
    p.add_argument(
        "--continue-on-nan",
        action="store_true",
        default=_,
        help="keep training when the loss becomes NaN or infinite, with a warning (default: "
        "stop at that step with an error, keeping the last good checkpoint)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default=_,
        help="progress display on stderr (default: auto: a bar on a terminal, else lines)",
    )


def run(args: argparse.Namespace) -> int:
    from graphc.training.loop import Trainer

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    for key in ("data", "checkpoint", "plot", "log_json", "model"):
        if key in given and isinstance(given[key], str):
            given[key] = _expand_user(given[key])
    from graphc.distributed.training import ending_the_job_on_error

    with ending_the_job_on_error("graphc train"):  # under mpiexec: one rank's error ends all
        return Trainer(TrainConfig(**given), explicit=set(given)).run()


def _expand_user(spec: str) -> str:
    """~ in paths, also after the `cifar10:` / `mnist:` prefix."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("cifar10", "mnist", "text"):
        return f"{kind}:{os.path.expanduser(rest)}"
    return os.path.expanduser(spec)
