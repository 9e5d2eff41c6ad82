"""`graphc bench`: graphc against PyTorch eager and torch.compile on the same machine, in one run.

The protocol (../shared/notes/anchors.md, DESIGN §5):
- every contender starts from the same weights (PyTorch's default initialisation, copied into
  graphc; graphc's own initialisation when PyTorch is absent) and trains on the same fixed
  synthetic batch; one step = zero_grad, forward, loss, backward, optimizer step, reading the
  loss;
- before anything is timed, the loss of graphc's first two steps must match the reference
  (PyTorch eager, else graphc's eager mode) to rtol 1e-4 and the first update of every
  parameter must match too, or the run stops: a benchmark of a wrong result is meaningless;
- after a warm-up, contenders run interleaved in rounds (k steps of each, the order rotating
  every round) in one process, so machine noise hits all of them alike;
- every measurement runs in a child process whose thread count is fixed through the
  environment before numpy, OpenBLAS, OpenMP, PyTorch or graphc start: the machine's peak
  (a large numpy sgemm), the correctness check, cold and warm starts with their own compile
  caches, peak RSS, and the interleaved timing.

Layout: config.py (what to run), workload.py (models, weights, batch, FLOPs), twin.py (the
PyTorch twin of a graphc model), contenders.py (one class per contender), timing.py (rounds
and their statistics), child.py (the child processes' entry point), runner.py (the parent:
spawns children, assembles the result), report.py (the table and the JSON layout).
"""

from graphc.bench.config import BenchConfig, BenchError
from graphc.bench.runner import run_bench

__all__ = ["BenchConfig", "BenchError", "run_bench"]
