"""Run the compiled (native) step next to the reference interpreter and report the first
value that differs: its node, kernel, phase (forward, backward or update) and source line.

Both sides start from copies of the same state and run --steps steps, each feeding its own
updated parameters and optimizer state into the next. Every value a kernel stores is
compared (the step is compiled with a memory plan that keeps all of them). The exit status
is 1 when a value diverges beyond tolerance, 0 when all match.

TARGET is as for `graphc inspect`: convnet, FILE.py:Class or FILE.py:function. A Module is
checked through its whole training step unless --inference is given.

examples:
  graphc check convnet --input-shape 8x3x32x32
  graphc check net.py:Net --input-shape 16x1x28x28 --optimizer adam --steps 3
  graphc check step.py:train_step --input-shape 8x4,8x4
"""

from __future__ import annotations

import argparse

from graphc.commands import options

HELP = "compare the native step with the reference interpreter, value by value"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from graphc.commands.inspect import add_target_arguments

    add_target_arguments(p, argparse.SUPPRESS)  # training is the default here: see --inference
    p.add_argument("--inference", action="store_true", help="check a Module's forward pass only")
    p.add_argument(
        "--steps", type=options.count, default=2, metavar="K", help="steps to run (default: 2)"
    )
    p.add_argument(
        "--rtol", type=options.non_negative, default=1e-3, help="relative tolerance (default: 1e-3)"
    )
    p.add_argument(
        "--atol", type=options.non_negative, default=1e-4, help="absolute tolerance (default: 1e-4)"
    )
    # Test hook, hidden from --help: the native code adds 1 to the first element of this
    # kernel's output after it runs, so tests can see check name the corrupted node.
    p.add_argument("--fault", metavar="KERNEL", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from graphc.inspection import InspectError
    from graphc.inspection.target import resolve

    if args.target is None:
        raise InspectError(
            "give a TARGET: convnet, FILE.py:Class or FILE.py:function (see graphc check -h)"
        )
    if args.train and args.inference:
        raise InspectError("--train and --inference exclude each other")
    train = False if args.inference else (True if args.train else None)
    target = resolve(args.target, args.input_shape, train, args.optimizer, args.lr)
    report = target.inspection().check(args.steps, args.rtol, args.atol, fault=args.fault)
    print(report.text())
    return 0 if report.ok else 1
