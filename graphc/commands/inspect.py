"""See what the compiler does to a model or step: the IR after any pass (text, JSON or
Graphviz DOT), the fusion groups and every merge rejected with its reason, the memory plan,
FLOPs and bytes per kernel, one kernel's LLVM IR or assembly, and a per-kernel profile.

TARGET is convnet (the reference model; also lenet5, mlp, resnet20, mobilenet, autoencoder),
FILE.py:Class (a graphc.nn.Module; needs --input-shape) or FILE.py:function (compiled as
written, one random tensor per --input-shape). A Module is compiled for inference, or with
--train as the whole training step (cross-entropy on labels drawn for its classes, or the
mean squared error against the input for a model that reconstructs it, backward, optimizer
step).
Without a report option the IR after the last pass is printed.

examples:
  graphc inspect --list-passes
  graphc inspect convnet --train                      # the training step after the last pass
  graphc inspect convnet --train --after all          # after every pass, in order
  graphc inspect convnet --after fuse --format dot | dot -Tsvg > convnet.svg
  graphc inspect net.py:Net --input-shape 32x1x28x28 --train --fusion --memory
  graphc inspect convnet --train --flops
  graphc inspect convnet --train --llvm k3_loop       # kernel names: see --fusion
  graphc inspect convnet --train --profile 20
"""

from __future__ import annotations

import argparse

from graphc.commands import options
from graphc.training.config import OPTIMIZERS

HELP = "show the IR after any pass, fusion, memory, FLOPs, a kernel's LLVM IR/asm, a profile"
FORMATS = ("text", "json", "dot")


def add_target_arguments(p: argparse.ArgumentParser, train_help: str) -> None:
    """TARGET and how to call it: shared by `graphc inspect` and `graphc check`."""
    p.add_argument(
        "target",
        nargs="?",
        metavar="TARGET",
        help="convnet | lenet5 | mlp | resnet20 | mobilenet | autoencoder | FILE.py:Class | "
        "FILE.py:function",
    )
    p.add_argument(
        "--input-shape",
        metavar="NxCxHxW",
        help="the batch shape, e.g. 64x3x32x32 (default for convnet: 64x3x32x32); for a "
        "function, one shape per tensor argument separated by commas",
    )
    p.add_argument("--train", action="store_true", help=train_help)
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="optimizer of the training step (default: sgd)"
    )
    p.add_argument(
        "--lr", type=options.positive, help="learning rate (default: sgd 0.03, adam/adamw 0.001)"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(
        p, "inspect the whole training step (forward, loss, backward, update); default: inference"
    )
    p.add_argument("--list-passes", action="store_true", help="list the passes in order and exit")
    p.add_argument(
        "--after",
        metavar="PASS|all",
        help="print the IR after this pass (traced: before any), or after every pass",
    )
    p.add_argument(
        "--format", choices=FORMATS, default="text", help="how to print the IR (default: text)"
    )
    p.add_argument(
        "--fusion",
        action="store_true",
        help="every kernel, the rule that formed it, each rejected merge",
    )
    p.add_argument(
        "--memory", action="store_true", help="arena size, each buffer's bytes, lifetime and reuse"
    )
    p.add_argument(
        "--flops",
        action="store_true",
        help="FLOPs and bytes per node and kernel, intensity, totals",
    )
    p.add_argument("--llvm", metavar="KERNEL", help="the optimised LLVM IR of one kernel")
    p.add_argument("--asm", metavar="KERNEL", help="the assembly of one kernel")
    p.add_argument(
        "--profile",
        type=options.count,
        metavar="N",
        help="run the native step N times: time, GFLOP/s and %% of peak per kernel",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from graphc.inspection import InspectError
    from graphc.inspection.native import check_kernel
    from graphc.inspection.target import resolve
    from graphc.passes import STAGES

    if args.list_passes:
        print(list_passes())
        return 0
    if args.target is None:
        raise InspectError(
            "give a TARGET: convnet, FILE.py:Class or FILE.py:function (see graphc inspect -h)"
        )
    if args.after is not None and args.after not in (*STAGES, "all"):
        raise InspectError(
            f"unknown pass {args.after!r}; --after takes one of: {', '.join(STAGES)}, all"
        )
    reports = [
        f"--{n}" for n in ("fusion", "memory", "flops", "llvm", "asm", "profile") if _given(args, n)
    ]
    if args.format == "dot" and reports:
        raise InspectError(
            f"--format dot draws the IR only; leave out {' '.join(reports)} or use --format text "
            "or json"
        )
    if args.profile is not None and args.profile < 1:
        raise InspectError(f"--profile needs a number of steps >= 1, not {args.profile}")

    target = resolve(args.target, args.input_shape, args.train, args.optimizer, args.lr)
    insp = target.inspection()
    for kernel in (args.llvm, args.asm):
        if kernel is not None:
            check_kernel(insp.graph(), kernel)  # before any slow report
    stages = args.after if args.after is not None else (None if not reports else ())
    if args.format == "dot":
        print(insp.dot(stages))
        return 0
    sections = _sections(insp, args)
    if args.format == "json":
        reports = {name: value.to_json() for name, value in sections.items()}
        graphs = [] if stages == () else stages
        doc = insp.json(graphs, target=args.target, mode=target.mode, **reports)
        if stages == ():
            doc.pop("graphs")  # only reports were asked for
        print(json.dumps(doc, indent=1))
        return 0
    chunks = [] if stages == () else [insp.text(stages)]
    chunks += [value.text() for value in sections.values()]
    print("\n\n".join(chunks))
    return 0


def _given(args: argparse.Namespace, name: str) -> bool:
    value = getattr(args, name)
    return value is not None and value is not False


def _sections(insp, args: argparse.Namespace) -> dict:
    """Report name -> report object (or text), in the order the options are documented."""
    out: dict = {}
    if args.fusion:
        out["fusion"] = insp.fusion()
    if args.memory:
        out["memory"] = insp.memory()
    if args.flops:
        out["flops"] = insp.cost()
    if args.llvm is not None:
        text = insp.llvm(args.llvm)
        out["llvm"] = _Code(
            args.llvm, f"; optimised LLVM IR of {args.llvm}, compiled on its own", text
        )
    if args.asm is not None:
        out["asm"] = _Code(args.asm, f"# assembly of {args.asm}", insp.asm(args.asm))
    if args.profile is not None:
        out["profile"] = insp.profile(args.profile)
    return out


class _Code:
    """A kernel's LLVM IR or assembly as a report section."""

    def __init__(self, kernel: str, title: str, code: str) -> None:
        self.kernel, self.title, self.code = kernel, title, code

    def text(self) -> str:
        return f"{self.title}\n{self.code}"

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "text": self.code}


def list_passes() -> str:
    import sys

    from graphc.passes import PIPELINE

    lines = ["traced          the graph as traced, before any pass"]
    for name, fn in PIPELINE:
        # the first sentence of the pass module's docstring, after "name: "
        doc = (sys.modules[fn.__module__].__doc__ or "").strip().split("\n\n")[0]
        summary = " ".join(doc.split()).partition(": ")[2].split(". ")[0].rstrip(".")
        lines.append(f"{name:<15} {summary}")
    return "\n".join(lines)
