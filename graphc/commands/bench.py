"""Benchmark graphc against PyTorch eager and torch.compile on this machine, in one run.

Every contender trains the same model from the same initial weights (PyTorch's default
initialisation) on the same fixed synthetic batch, on the same number of threads; one step is
zero_grad, forward, loss, backward, optimizer step and reading the loss. graphc must first
reproduce the reference's losses and first updates (rtol 1e-4) or nothing is reported. Then
the contenders run interleaved in rounds, so machine noise hits them alike. Reported: median
ms/step with its spread, images/s, the ratio to PyTorch eager (> 1: faster), GFLOP/s and %
of the machine's fp32 peak (a numpy sgemm measured in the same run), cold start (empty compile
cache) and warm start (cache filled) in fresh processes, and each contender's peak RSS.

examples:
  graphc bench                                   # the reference ConvNet, batch 64
  graphc bench --batch-size 64,256 --inference   # two batch sizes, plus batch-1 latency
  graphc bench --model lenet5 --optimizer adam --no-torch-compile
  graphc bench --model my_models.py:SmallNet --input-shape 3,32,32
  graphc bench --steps 2 --rounds 2 --warmup 1 --no-torch-compile   # a quick look
  graphc bench --json results.json               # --json alone: the JSON on stdout

The JSON layout is documented in graphc/bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from graphc.bench.config import BACKENDS, OPTIMIZERS, BenchConfig, machine_threads
from graphc.commands import options

HELP = "time graphc against PyTorch eager and torch.compile on the same machine"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    p.add_argument(
        "--model",
        default=d.model,
        metavar="NAME|FILE.py:Class",
        help="convnet, lenet5, mlp, resnet20, transformer, lstm, mobilenet, autoencoder, or a "
        "graphc.nn.Module class in your file (default: convnet)",
    )
    p.add_argument(
        "--input-shape",
        type=_ints,
        metavar="C,H,W",
        help="shape of one sample (default: the built-in model's; required for FILE models)",
    )
    p.add_argument(
        "--batch-size",
        type=_ints,
        default=d.batch_sizes,
        metavar="N[,N...]",
        help="images per step; several run one after the other (default: 64)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="(default: sgd)")
    p.add_argument("--lr", type=options.positive, help="learning rate (default: 0.001)")
    p.add_argument(
        "--steps",
        type=options.count,
        default=d.steps,
        help=f"timed calls per contender per round ({d.steps})",
    )
    p.add_argument(
        "--rounds", type=options.count, default=d.rounds, help=f"rounds (default: {d.rounds})"
    )
    p.add_argument(
        "--warmup",
        type=options.count_or_zero,
        default=d.warmup,
        help=f"untimed calls first (default: {d.warmup})",
    )
    p.add_argument(
        "--threads",
        type=options.threads,
        default=machine_threads(),
        help="threads for every contender (default: the cores available, "
        f"{machine_threads()} here)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=d.backend,
        help="graphc's backend under graphc.compile (default: native)",
    )
    p.add_argument(
        "--no-torch-compile",
        dest="torch_compile",
        action="store_false",
        help="leave out torch.compile (it takes about 20 s to compile)",
    )
    p.add_argument(
        "--no-torch",
        dest="torch",
        action="store_false",
        help="graphc alone (checked against its own eager mode); implies --no-torch-compile",
    )
    p.add_argument(
        "--inference",
        action="store_true",
        help="also time forward-only latency at --inference-batch (default batch 1)",
    )
    p.add_argument(
        "--inference-batch",
        type=options.count,
        default=d.inference_batch,
        metavar="N",
        help="batch size of the --inference latency (default: 1)",
    )
    p.add_argument(
        "--no-train", dest="train", action="store_false", help="skip training (with --inference)"
    )
    p.add_argument(
        "--no-startup",
        dest="startup",
        action="store_false",
        help="skip the cold/warm start and peak RSS measurements (fresh processes)",
    )
    p.add_argument(
        "--rss-steps",
        type=options.count_or_zero,
        default=d.rss_steps,
        help=f"training steps of each startup process before its RSS is read ({d.rss_steps})",
    )
    p.add_argument(
        "--seed", type=options.seed, default=d.seed, help="weights and batch (default: 0)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the results as JSON to FILE (no FILE: to stdout, instead of the table)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--timeout",
        type=options.positive,
        default=d.timeout,
        help="seconds any one measuring process may take",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="instead: all-reduce time per step and the scaling of --threads MPI ranks x 1 "
        "thread against 1 rank x --threads threads (graphc.distributed.bench; needs "
        "pip install 'graphc[distributed]')",
    )


def run(args: argparse.Namespace) -> int:
    from graphc.bench import run_bench
    from graphc.bench.report import format_result

    if args.distributed:  # the reference ConvNet under mpiexec: graphc/distributed/bench.py
        from graphc.distributed import bench as distributed

        argv = ["--batch-size", str(args.batch_size[0]), "--ranks", str(args.threads)]
        argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.json not in (None, "-"):
            argv += ["--json", args.json]
        return distributed.run(argv)
    config = BenchConfig(
        model=args.model,
        input_shape=args.input_shape,
        batch_sizes=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        steps=args.steps,
        rounds=args.rounds,
        warmup=args.warmup,
        threads=args.threads,
        backend=args.backend,
        torch=args.torch,
        torch_compile=args.torch and args.torch_compile,
        train=args.train,
        inference=args.inference,
        inference_batch=args.inference_batch,
        startup=args.startup,
        rss_steps=args.rss_steps,
        seed=args.seed,
        timeout=args.timeout,
    )

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"graphc bench: {msg}", file=sys.stderr, flush=True)

    result = run_bench(config, progress)
    text = json.dumps(result, indent=1)
    if args.json == "-":
        print(text)
        return 0
    if args.json:
        from graphc.serialization import atomic_write

        atomic_write(args.json, (text + "\n").encode())
    print(format_result(result))
    return 0
