"""Entry point of the benchmark's child processes: `python -m graphc.bench.child ROLE IN OUT`.

IN is a JSON request, OUT receives the JSON result. The parent (runner.py) fixes the thread
count, the compile-cache directories and GRAPHC_BENCH_SPAWN_TIME (its wall clock just before
starting this process) in the environment. Roles:

  peak     the machine's fp32 peak: a large numpy sgemm (peak.py)
  prepare  make the workload (initial weights, batch) into an .npz file, count graphc's FLOPs
           on its optimised graph, and run the correctness check (check.py)
  probe    one contender from a fresh process: time of its first call, time from process start
           to the first step's return, then a short training run and the process's peak RSS
  timing   every contender in this one process, interleaved in rounds (timing.py)

An anticipated failure (a GraphcError: bad model, failed check) is returned as {"error": msg}
for the parent to print; anything else is a crash, reported with the child's stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _peak(req: dict) -> dict:
    from graphc.bench.peak import measure_peak

    return measure_peak()


def _prepare(req: dict) -> dict:
    from graphc.bench import workload as wl
    from graphc.bench.check import check_inference, check_training
    from graphc.bench.config import GRAPHC_EAGER, TORCH_EAGER, BenchError, Workload
    from graphc.bench.contenders import (
        GraphcContender,
        TorchContender,
        make_contender,
        torch_available,
    )

    w = Workload.from_json(req["workload"])
    cls = wl.model_class(w.model)
    shape = wl.input_shape(w)
    notes, twin = [], None
    if req["torch"]:
        if not torch_available():
            notes.append(
                "PyTorch is not installed: graphc runs alone, checked against its eager mode"
            )
        else:
            from graphc.bench.twin import torch_twin

            _set_threads(w.threads, torch=True)
            try:
                twin = torch_twin(cls)
            except BenchError as e:
                notes.append(f"{e}; graphc runs alone, checked against its eager mode")
    _set_threads(w.threads)
    classes = wl.num_classes(cls, shape, w.seed)
    state = wl.initial_state(cls, twin, w.seed)
    x, y = wl.make_batch(w.batch_size, shape, classes, w.seed, cls)
    data = wl.WorkloadData(state, x, y, classes)
    wl.save(req["npz"], data)

    subject = GraphcContender(w, data)
    reference = make_contender(TORCH_EAGER if twin is not None else GRAPHC_EAGER, w, data)
    if w.kind == "train":
        if twin is not None:
            exact = TorchContender(w, data, float64=True)
        else:
            exact = GraphcContender(w, data, compiled=False, float64=True)
        check = check_training(subject, reference, state, exact)
    else:
        check = check_inference(subject, reference)
    flops = wl.count_flops(subject.graph())
    flops["anchor_dense"] = wl.anchor_flops(w)
    return {
        "input_shape": list(shape),
        "num_classes": classes,
        "parameters": int(sum(v.size for v in state.values())),
        "initialisation": "pytorch-default" if twin is not None else "graphc-default",
        "torch_twin": twin is not None,
        "flops": flops,
        "check": check,
        "notes": notes,
    }


def _probe(req: dict) -> dict:
    from graphc.bench import config
    from graphc.bench import workload as wl
    from graphc.bench.config import GRAPHC, Workload
    from graphc.bench.contenders import make_contender

    w = Workload.from_json(req["workload"])
    name = req["contender"]
    _set_threads(w.threads, torch=name != GRAPHC)
    data = wl.load(req["npz"])
    t0 = time.perf_counter()
    c = make_contender(name, w, data)
    t1 = time.perf_counter()
    c.run()
    t2 = time.perf_counter()
    start_to_first = time.time() - float(os.environ[config.SPAWN_TIME_VAR])
    for _ in range(req["rss_steps"]):
        c.run()
    return {
        "first_call_s": t2 - t1,
        "setup_s": t1 - t0,
        "start_to_first_step_s": start_to_first,
        "steps": 1 + req["rss_steps"],
        "peak_rss_mb": peak_rss_mb(),
        "compile": c.compile_details(),
    }


def _timing(req: dict) -> dict:
    from graphc.bench import workload as wl
    from graphc.bench.config import GRAPHC, TORCH_EAGER, Workload
    from graphc.bench.contenders import make_contender
    from graphc.bench.timing import interleave

    w = Workload.from_json(req["workload"])
    names = req["contenders"]
    _set_threads(w.threads, torch=any(n != GRAPHC for n in names))
    data = wl.load(req["npz"])
    built, first, dropped = {}, {}, {}
    for name in names:
        try:
            c = make_contender(name, w, data)
            t0 = time.perf_counter()
            out = c.run()
            first[name] = {"first_call_s": time.perf_counter() - t0, "result": out}
            built[name] = c
        except Exception as e:
            if name in (GRAPHC, TORCH_EAGER):
                raise
            # torch.compile is optional: a failure to compile costs its column, not the run
            dropped[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    ref = first[TORCH_EAGER if TORCH_EAGER in first else GRAPHC]["result"]
    for name in list(built):
        if not _agrees(first[name]["result"], ref):
            if name in (GRAPHC, TORCH_EAGER):
                raise AssertionError(f"{name}'s first result changed since the check")
            dropped[name] = "its first result disagrees with PyTorch eager's (rtol 1e-4)"
            del built[name]
    samples = interleave(
        {n: c.run for n, c in built.items()}, req["warmup"], req["rounds"], req["steps"]
    )
    out = {}
    for name, c in built.items():
        last = c.run()  # one more call each, so all have run the same number of steps
        out[name] = {
            "rounds_ns": samples[name],
            "first_call_s": first[name]["first_call_s"],
            "first_loss": first[name]["result"] if w.kind == "train" else None,
            "final_loss": last if w.kind == "train" else None,
            "compile": c.compile_details(),
        }
    return {"contenders": out, "dropped": dropped}


def _agrees(a, b, rtol: float = 1e-4) -> bool:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    scale = max(float(np.abs(b).max()), 1e-30)
    return bool(np.abs(a - b).max() <= rtol * scale)


def _set_threads(n: int, torch: bool = False) -> None:
    """The parent set OMP/OpenBLAS/GRAPHC_NUM_THREADS already; the APIs make sure."""
    import graphc

    set_graphc = getattr(graphc, "set_num_threads", None)
    if set_graphc is not None:
        set_graphc(n)
    if torch:
        import torch as _torch

        if _torch.get_num_threads() != n:
            _torch.set_num_threads(n)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ROLES = {"peak": _peak, "prepare": _prepare, "probe": _probe, "timing": _timing}


def main(argv: list[str]) -> int:
    role, in_path, out_path = argv
    with open(in_path) as f:
        req = json.load(f)
    from graphc.errors import GraphcError

    try:
        result = ROLES[role](req)
    except GraphcError as e:
        result = {"error": str(e)}
    except Exception:
        traceback.print_exc()
        return 1
    with open(out_path, "w") as f:
        json.dump(_jsonable(result), f)
    return 0


def _jsonable(x):
    """numpy scalars and arrays to Python; NaN/inf to None (strict JSON has neither)."""
    import math

    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
