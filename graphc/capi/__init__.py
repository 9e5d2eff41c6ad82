"""graphc.export: a compiled training step, or a model in eval mode, as a shared library
with a C header, run without Python.

    graphc.export(train_step, inputs, labels, path="out", name="convnet")
    graphc.export(net.eval(), inputs, path="out")       # inference: NAME_forward

writes out/libNAME.so (position-independent; needs only libc, libm and pthreads), out/NAME.h
(the C interface, documented) and out/NAME.json (the ABI as data). The step is traced as
graphc.compile traces it, its machine code is graphc.compile's for the same target (the
compile cache is shared), and a small C runtime (runtime.c, weights.c) owns the context:
memory, weights, the worker threads, weights files. See layout.py for what the library
holds, csource.py and header.py for what is generated, build.py for the build.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graphc.capi import layout as L
from graphc.capi.abi import abi
from graphc.capi.bind import build_layout
from graphc.capi.csource import Target, image, model_source
from graphc.capi.features import required
from graphc.capi.header import header_source
from graphc.capi.layout import ExportError
from graphc.frontend.bindings import ArgSource

__all__ = ["export", "Exported", "ExportError"]

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while".split()
)


@dataclass
class Exported:
    """What graphc.export wrote, and what it took."""

    name: str
    kind: str  # "train" or "inference"
    library: Path
    header: Path
    abi: Path
    target: str
    seconds: float
    timings: dict[str, float | str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes of the shared library."""
        return self.library.stat().st_size


def export(
    fn: object,
    *example_inputs,
    path: str | os.PathLike,
    name: str | None = None,
    target: str | None = None,
    threads: int | None = None,
) -> Exported:
    """Writes `fn` as path/libNAME.so, path/NAME.h and path/NAME.json.

    fn: a training step (a @graphc.compile function, or a plain one, taking a float32
    batch and int64 labels and returning the loss) or an nn.Module in eval mode (its
    forward becomes NAME_forward). example_inputs: a batch (and labels) of the shapes the
    library will take; their values do not matter. name: the C prefix (default: the
    function's or the module class's name, lower case). target: "host" (this CPU's full
    instruction set; the default is graphc.compile's, so the library computes its numbers
    bit for bit), or "avx512", "avx2", "generic" to run on other x86-64 machines. threads:
    1 for a serial build without pthreads; N for N threads by default; None: the cores of
    the machine it runs on.
    """
    return build_library(fn, example_inputs, path, name, target, threads)


def build_library(
    fn: object,
    example_inputs: Sequence,
    path: str | os.PathLike,
    name: str | None = None,
    target: str | None = None,
    threads: int | None = None,
    simulate_cpu: str | None = None,
) -> Exported:
    """export(); `simulate_cpu` (tests): the library's CPU check sees only these features
    (a comma-separated list of LLVM feature names)."""
    from graphc.capi import build
    from graphc.codegen import export as native

    t0 = time.perf_counter()
    kind, traced_fn, default_name = _what(fn)
    name = _check_name(name or default_name)
    if threads is not None and not (isinstance(threads, int) and 1 <= threads <= 512):
        raise ExportError(f"threads must be 1 (a serial build) .. 512, or None; got {threads!r}")
    try:
        tgt = native.export_target(target)
    except ValueError as e:
        raise ExportError(str(e)) from None
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; pass the directory to write the library into")
    compiler = build.find_compiler()  # before the work: a missing compiler fails fast
    entry = _trace(traced_fn, example_inputs, native.vectors(tgt))
    if kind is None:  # a function: a step takes (inputs, labels), a forward (inputs)
        arguments = sum(isinstance(s, ArgSource) for s in entry.sources)
        kind = L.INFERENCE if arguments == 1 else L.TRAIN
    layout = build_layout(entry, name, kind)
    t1 = time.perf_counter()
    objects, info = native.step_objects(layout.graph, tgt)
    if threads != 1:
        objects = objects + [native.pool_object(tgt)]
    t2 = time.perf_counter()
    timings: dict[str, float | str] = {
        "trace and passes": t1 - t0,
        "machine code": t2 - t1,
        "machine code cache": str(info.get("cache")),
    }
    checked, unchecked = required(tgt.kind, tgt.features, tgt.triple)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = _Sources(
        layout,
        Target(tgt.kind, tgt.cpu, checked, threads),
        header_source(layout, _description(layout, entry), threads),
        (native.POOL_BYTES, native.JOB_SLOT),
    )
    library, header = _build(compiler, sources, objects, out_dir, timings, simulate_cpu)
    target_info = {
        "kind": tgt.kind,
        "triple": tgt.triple,
        "cpu": tgt.cpu,
        "vector_bits": tgt.vector_bits,
        "cpu_features": [f.name for f in checked],
        "unchecked_features": unchecked,
    }
    table = abi(layout, target_info, threads, library.name, header.name)
    abi_path = out_dir / f"{name}.json"
    _write(abi_path, (json.dumps(table, indent=1) + "\n").encode())
    seconds = time.perf_counter() - t0
    return Exported(name, kind, library, header, abi_path, tgt.kind, seconds, timings)


@dataclass
class _Sources:
    """What is generated for one library besides the machine code."""

    layout: L.Layout
    target: Target
    header: str
    pool: tuple[int, int]  # the thread pool's size and its JOB slot (codegen/threads.py)


def _build(
    compiler,
    sources: _Sources,
    objects: list[bytes],
    out_dir: Path,
    timings: dict[str, float | str],
    simulate_cpu: str | None,
) -> tuple[Path, Path]:
    """Compiles the C parts, links the library into out_dir (a temporary name, fsync,
    rename) and writes its header; returns their paths."""
    from graphc.capi import build

    name, threaded = sources.layout.name, sources.target.threads != 1
    with tempfile.TemporaryDirectory(prefix="graphc-export-") as tmp:
        build_dir = Path(tmp)
        t0 = time.perf_counter()
        objs = []
        for i, obj in enumerate(objects):
            objs.append(build_dir / f"code{i}.o")
            objs[-1].write_bytes(obj)
        blob, offsets = image(sources.layout)
        (build_dir / "image.bin").write_bytes(blob)
        (build_dir / f"{name}.h").write_text(sources.header)
        text = model_source(
            sources.layout, sources.target, str(build_dir / "image.bin"), offsets, sources.pool
        )
        (build_dir / "model.c").write_text(text)
        objs += build.runtime_objects(compiler, threaded, build_dir, simulate_cpu)
        objs.append(build.compile_model(compiler, build_dir / "model.c", build_dir))
        t1 = time.perf_counter()
        timings["C runtime and tables"] = t1 - t0
        library = out_dir / f"lib{name}.so"
        exported = [f"{name}_{f}" for f in _functions(sources.layout.kind)]
        fd, partial = tempfile.mkstemp(prefix=f".lib{name}.", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            build.link(compiler, objs, exported, library.name, Path(partial), threaded, build_dir)
            _sync(Path(partial))
            os.chmod(partial, 0o755 & ~_umask())  # as cc would leave it, not mkstemp's 0600
            os.replace(partial, library)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        timings["link"] = time.perf_counter() - t1
    header = out_dir / f"{name}.h"
    _write(header, sources.header.encode())
    return library, header


def _functions(kind: str) -> list[str]:
    run = "step" if kind == L.TRAIN else "forward"
    return ["create", run, "load_weights", "save_weights", "status", "num_threads", "destroy"]


def _what(fn: object) -> tuple[str | None, Callable, str]:
    """(kind, the function to trace, its default name) for what graphc.export was given."""
    from graphc.frontend.compile import CompiledFunction, CompiledModule
    from graphc.nn.module import Module

    if isinstance(fn, CompiledModule):
        fn = fn.module
    if isinstance(fn, Module):
        if fn.training:
            raise ExportError(
                f"{type(fn).__name__} is in training mode; a module exports for inference: "
                "call .eval() first (a training step exports from a @graphc.compile function "
                "that runs the optimizer)"
            )
        module = fn

        def forward(inputs):
            return module(inputs)

        forward.__name__ = type(module).__name__
        return L.INFERENCE, forward, type(module).__name__.lower()
    if isinstance(fn, CompiledFunction):
        fn = fn.fn
    if not callable(fn):
        raise ExportError(
            f"graphc.export takes a training step (a function) or an nn.Module, not a "
            f"{type(fn).__name__}"
        )
    return None, fn, getattr(fn, "__name__", "model")


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) or name in _C_KEYWORDS:
        raise ExportError(
            f"name {name!r} cannot prefix C functions: use letters, digits and _ (not first a "
            "digit, at most 64), not a C keyword"
        )
    return name


def _trace(fn: Callable, example_inputs: Sequence, vectors) -> object:
    """The step traced and optimised as graphc.compile does for these inputs (tiles planned
    for the library's vectors), not compiled: no machine code runs in this process."""
    from graphc.frontend.compile import CompiledFunction

    def capture(graph):
        def not_runnable(arrays):
            raise ExportError("an export trace does not run")

        return not_runnable

    capture.vectors = lambda: vectors
    return CompiledFunction(fn, backend=capture).trace(*example_inputs)


def _description(layout: L.Layout, entry) -> str:
    x = next(a for a in layout.arguments if a.name == "inputs").node
    from graphc.nn.module import Module

    model = next((type(o).__name__ for o in entry.owners if isinstance(o, Module)), None)
    optimizer = next((type(o).__name__ for o in entry.owners if hasattr(o, "param_groups")), None)
    if layout.kind == L.TRAIN:
        what = f"A training step of {model or 'a model'}"
        what += f" with {optimizer}" if optimizer else ""
        return f"{what} on batches of {list(x.shape)} (forward, loss, backward, update)."
    return f"The forward of {model or 'a model'} (eval mode) on batches of {list(x.shape)}."


def _umask() -> int:
    from graphc.serialization import _umask as umask

    return umask()


def _write(path: Path, data: bytes) -> None:
    from graphc.serialization import atomic_write

    atomic_write(path, data)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
