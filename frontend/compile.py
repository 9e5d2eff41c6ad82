"""graphc.compile: trace a function (or Module) once per input signature, run the compiled
graph on every call.

A call first makes tensors of the arguments that are data but not tensors yet (numeric lists,
numpy scalars: frontend/arguments.py), flattens them, looks up the traces cached for their
signature (shapes, dtypes, requires_grad, and the values of non-tensor arguments) and takes
the first whose guards still hold (a module's train/eval mode, hyperparameters, whether .grad
is set). On a miss it traces, runs the pass pipeline and builds an executable. Then it binds
the inputs, runs, writes state back and returns ordinary tensors.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import debug, dispatch, status
from graphc.errors import GraphcError, OptionError, TraceError
from graphc.frontend.arguments import convert_arguments
from graphc.frontend.bindings import (
    ArgGradSink,
    GradSink,
    HostGroup,
    ReturnSink,
    Sink,
    Source,
    TensorSink,
    evaluate_host,
)
from graphc.frontend.pytree import flatten, unflatten
from graphc.frontend.trace import Guard, Trace, _ArgKey
from graphc.interpreter import interpret
from graphc.ir import Graph, GraphBuilder, Node
from graphc.passes import PipelineResult, run_pipeline
from graphc.tensor import Tensor

if TYPE_CHECKING:
    from graphc.inspection import Inspection

MAX_TRACES_PER_SIGNATURE = 8


@dataclass
class Entry:
    """One trace of a function: its graphs, how to bind them, and when it still applies.

    On a warm start (the backend found this trace's executable in its cache) the pass
    pipeline does not run; `pipeline` runs it on first use (inspection, GRAPHC_DEBUG=2) and
    gives the graph the executable was compiled from (the passes are deterministic)."""

    traced: Graph
    planned_pipeline: PipelineResult | None  # None until asked for, on a warm start
    sources: list[Source]
    sinks: list[Sink]
    returns: Any  # the return value's structure; leaves are output indices
    grad_clears: list[Tensor]
    host_groups: list[HostGroup]
    guards: list[Guard]
    executable: Callable[[list[np.ndarray]], list[np.ndarray]]
    timings: dict[str, float] = field(default_factory=dict)
    with_vectors: Graph | None = None  # what the pipeline starts from (the traced graph with
    # the backend's vectors)
    # The modules and optimizers the trace met, in that order, a module before its children
    # (graphc export names the state it carries after their state_dicts).
    owners: list[Any] = field(default_factory=list)
    # One call at a time: native code computes in one arena and returns views of it until
    # the sinks and return values have copied them out (threads calling one compiled
    # function would otherwise read each other's results).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pipeline(self) -> PipelineResult:
        if self.planned_pipeline is None:
            self.planned_pipeline = run_pipeline(self.with_vectors)
        return self.planned_pipeline

    @property
    def graph(self) -> Graph:
        return self.pipeline.graph

    def valid(self) -> bool:
        return all(g.holds() for g in self.guards)

    def run(self, args: Sequence) -> Any:
        with self.lock:
            host = evaluate_host(self.host_groups)
            arrays = [s.read(args, host) for s in self.sources]
            outs = self.executable(arrays)
            for sink, value in zip(self.sinks, outs, strict=True):
                sink.write(value, args)
            for t in self.grad_clears:
                t._grad = None
            ret_def, spec = self.returns
            leaves = [Tensor._wrap(np.array(outs[v])) if kind == "out" else v for kind, v in spec]
        return unflatten(ret_def, leaves)


def default_backend() -> Callable[[Graph], Callable]:
    """Native code, unless GRAPHC_BACKEND=interpreter asks for the reference interpreter."""
    choice = os.environ.get("GRAPHC_BACKEND", "native")
    if choice == "interpreter":
        return interpreter_executable
    if choice != "native":
        raise dispatch.user_error(
            OptionError,
            f"GRAPHC_BACKEND={choice!r}: expected 'native' or 'interpreter'; set it to one, "
            "or unset it for native code",
        )
    from graphc.codegen.backend import native_executable

    return native_executable


def interpreter_executable(graph: Graph) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    return lambda arrays: interpret(graph, arrays)


@contextlib.contextmanager
def _heap_frozen():
    """While a step compiles, the objects that existed before it are out of the cycle
    collector's view (gc.freeze): tracing and the passes make many small containers, and
    each full collection would walk the whole heap again (15 ms of ResNet-20's 65 ms warm
    trace). What the compile itself leaves as garbage is still collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class CompiledFunction:
    """What graphc.compile returns for a function: call it like the function."""

    def __init__(self, fn: Callable, backend: Callable[[Graph], Callable] | None = None) -> None:
        self.fn = fn
        self.backend = backend or default_backend()
        self.cache: dict[Any, list[Entry]] = {}
        self.last: Entry | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs) -> Any:
        if dispatch.is_tracing():  # called from another compiled function: trace through
            return self.fn(*args, **kwargs)
        if kwargs or not all(type(a) is Tensor for a in args):
            args, kwargs = convert_arguments(self.fn, args, kwargs)
        leaves, key = _signature(args, kwargs)
        entry = self.lookup(key)
        if entry is None:
            entry = self._trace(args, kwargs, leaves, key)
        self.last = entry
        return entry.run(leaves)

    def lookup(self, key) -> Entry | None:
        for entry in self.cache.get(key, ()):
            if entry.valid():
                return entry
        return None

    def trace(self, *args, **kwargs) -> Entry:
        """Traces and compiles for these arguments without running (for inspection)."""
        args, kwargs = convert_arguments(self.fn, args, kwargs)
        leaves, key = _signature(args, kwargs)
        return self.lookup(key) or self._trace(args, kwargs, leaves, key)

    def inspect(self, *args, **kwargs) -> Inspection:
        """Traces and compiles for these arguments without running, and returns a
        graphc.inspection.Inspection: the IR after each pass, fusion, memory, FLOPs, a kernel's
        LLVM IR and assembly, profile() and check() (which run on copies of the inputs)."""
        from graphc.inspection import Inspection

        args, kwargs = convert_arguments(self.fn, args, kwargs)
        leaves, _ = flatten((args, kwargs))
        return Inspection(self.trace(*args, **kwargs), leaves)

    def _trace(self, args, kwargs, leaves, key) -> Entry:
        name = getattr(self.fn, "__name__", "fn")
        with status.compiling(name), _heap_frozen():
            return self._compile(args, kwargs, leaves, key, name)

    def _compile(self, args, kwargs, leaves, key, name: str) -> Entry:
        caller = dispatch.user_location(4)
        t0 = time.perf_counter()
        trace = Trace(name)
        names = _argument_names(self.fn, args, kwargs, len(leaves))
        symbolic = []
        for i, (leaf, nm) in enumerate(zip(leaves, names, strict=True)):
            symbolic.append(trace.add_arg(i, nm, leaf) if _is_tensor_like(leaf) else leaf)
        (s_args, s_kwargs) = _rebuild(args, kwargs, symbolic)
        try:
            with dispatch.using(trace):
                result = self.fn(*s_args, **s_kwargs)
            trace.flag_guard()
            trace.structure_guard()
        except GraphcError as e:
            where = f" (traced for the call at {caller})" if caller else ""
            msg = str(e)
            if "\n  at " not in msg:
                line = _user_frame(e.__traceback__)
                msg += f"\n  at {line}" if line else ""
            raise type(e)(f"{msg}\n  while tracing {name}{where}").with_traceback(
                e.__traceback__
            ) from None
        finally:
            trace.finished = True
        traced, sources, sinks, returns, clears = _finish(trace, result)
        t1 = time.perf_counter()
        start = _with_vectors(traced, self.backend)
        # A backend may know this exact trace already (the native one's disk cache): then
        # no pass runs at all.
        warm = getattr(self.backend, "warm", None)
        executable = warm(start) if warm is not None else None
        pipeline = None
        if executable is None:
            pipeline = run_pipeline(start, on_pass=lambda p: status.update(f"pass {p}"))
            executable = self.backend(pipeline.graph)
            remember = getattr(self.backend, "remember", None)
            if remember is not None:
                remember(start, executable)
        t2 = time.perf_counter()
        seconds = pipeline.seconds if pipeline is not None else {}
        entry = Entry(
            traced,
            pipeline,
            sources,
            sinks,
            returns,
            clears,
            trace.host_groups,
            trace.guards,
            executable,
            {"trace": t1 - t0, **seconds, "backend": t2 - t1 - sum(seconds.values())},
            start,
            list(trace.owners),
        )
        entries = self.cache.setdefault(key, [])
        entries.append(entry)
        if len(entries) > MAX_TRACES_PER_SIGNATURE:
            entries.pop(0)
        debug.report_compile(name, entry)
        return entry


def _with_vectors(graph: Graph, backend: Callable) -> Graph:
    """The graph with the vectors the backend generates code for (a backend's optional
    `vectors()`), which the plan_tiles pass plans tiles for; the interpreter has none."""
    vectors = getattr(backend, "vectors", None)
    return graph.with_meta(vectors=vectors()) if vectors is not None else graph


def _user_frame(tb) -> str | None:
    """The innermost frame of a traceback that is the user's code (not graphc's)."""
    from graphc.ir import Loc

    found = None
    internal = dispatch._internal_dirs()
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(internal) or name.endswith(dispatch._USER_FILES):
            found = Loc(name, tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return str(found) if found else None


def compile(fn: Callable | None = None, **options) -> Any:
    """Compiles a training step or inference function (or a Module) into one graph.

    Usable as `@graphc.compile`, `@graphc.compile()` or `graphc.compile(module)`.
    """
    if fn is None:
        return lambda f: compile(f, **options)
    from graphc.nn.module import Module

    if isinstance(fn, Module):
        return CompiledModule(fn, **options)
    if not callable(fn):
        raise TypeError(f"graphc.compile expects a function or a Module, got {type(fn).__name__}")
    return CompiledFunction(fn, **options)


class CompiledModule:
    """A Module whose forward runs compiled; everything else is the module's own."""

    def __init__(self, module, **options) -> None:
        object.__setattr__(self, "module", module)

        def forward(*args, **kwargs):
            return module(*args, **kwargs)

        forward.__name__ = type(module).__name__
        try:  # errors and graph inputs then use forward's parameter names (x, not args[0])
            forward.__signature__ = inspect.signature(module.forward)
        except (TypeError, ValueError):
            pass
        object.__setattr__(self, "_compiled", CompiledFunction(forward, **options))

    def __call__(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    def inspect(self, *args, **kwargs) -> Inspection:
        """See CompiledFunction.inspect."""
        return self._compiled.inspect(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.module, name, value)

    def __repr__(self) -> str:
        return f"CompiledModule({self.module!r})"


# ---- finishing a trace ----------------------------------------------------------------------


def _finish(trace: Trace, result):
    """Turns a finished trace into a graph plus the bindings that run it."""
    b = trace.builder
    outputs: list[Node] = []
    out_names: list[str] = []
    sinks: list[Sink] = []
    names = _tensor_names(trace.owners)

    ret_leaves, ret_def = flatten(result)
    spec = []
    for k, leaf in enumerate(ret_leaves):
        if isinstance(leaf, Tensor):
            spec.append(("out", len(outputs)))
            outputs.append(trace.node_of(leaf))
            out_names.append("return" if len(ret_leaves) == 1 else f"return.{k}")
            sinks.append(ReturnSink())
        else:
            spec.append(("const", leaf))
    returns = (ret_def, spec)

    replaced: dict[int, Node] = {}  # output position -> the input node it updates
    for key, t in trace.written.items():
        node = trace.current[key][1]
        captured = trace.captured.get(key)
        if captured is None or captured[1] is not node:
            if captured is not None:
                replaced[len(outputs)] = captured[1]
            outputs.append(node)
            out_names.append(names.get(id(t), (f"state{len(sinks)}", ""))[0])
            sinks.append(TensorSink(t))
    clears = []
    for key, (holder, g) in trace.grads.items():
        if g is None:
            if isinstance(holder, Tensor):
                clears.append(holder)
            continue
        node = trace.node_of(g)
        if trace.grad_inputs.get(key) is node:
            continue  # unchanged
        if key in trace.grad_inputs:
            replaced[len(outputs)] = trace.grad_inputs[key]
        outputs.append(node)
        if isinstance(holder, _ArgKey):
            out_names.append(f"arg{holder.index}.grad")
            sinks.append(ArgGradSink(holder.index))
        else:
            out_names.append(names.get(id(holder), (f"tensor{len(sinks)}", ""))[0] + ".grad")
            sinks.append(GradSink(holder))
    out_names = _unique(out_names)

    # Give captured inputs the names (and kinds) users know them by.
    renames: dict[Node, tuple[str, str]] = {}
    for t, node in trace.captured.values():
        renames[node] = names.get(id(t), (node.name, "capture"))
        trace.sources[node].kind = renames[node][1]
    for key, node in trace.grad_inputs.items():
        t = trace.grads[key][0]
        renames[node] = (names.get(id(t), (node.name, ""))[0] + ".grad", "grad")
    graph, env = _rename_inputs(Graph(b.nodes, outputs, out_names, b.name), renames)
    # Which outputs are new values of which inputs (state updates): memory planning writes
    # them in place when it can.
    meta = {"updates": {out_names[i]: env[n].name for i, n in replaced.items()}}
    if trace.forward_end is not None:
        meta["forward_nodes"] = trace.forward_end
    graph = graph.with_meta(**meta)
    from graphc.verify import verify

    verify(graph, after="trace")
    old_of = {n: old for old, n in env.items()}
    sources = [trace.sources[old_of[n]] for n in graph.inputs]
    return graph, sources, sinks, returns, clears


def _rename_inputs(graph: Graph, renames: dict[Node, tuple[str, str]]):
    b = GraphBuilder(graph.name)
    env: dict[Node, Node] = {}
    for n in graph.nodes:
        if n.is_input:
            name, kind = renames.get(n, (n.name, n.attrs["kind"]))
            new = b.add_input(name, n.type, kind)
            new = Node("input", (), {"name": new.name, "kind": kind}, n.type, n.loc)
            b.nodes[-1] = new
        else:
            ins = tuple(env[i] for i in n.inputs)
            new = b.append(n.with_inputs(ins))
        env[n] = new
    return Graph(
        b.nodes, [env[o] for o in graph.outputs], graph.output_names, graph.name, graph.meta
    ), env


def _tensor_names(owners) -> dict[int, tuple[str, str]]:
    """id(tensor) -> (name, kind) from the modules and optimizers the trace met:
    ("fc1.weight", "param"), ("bn.running_mean", "buffer"), ("fc1.weight.exp_avg", "state").
    Optimizers name their state after their parameters, so modules come first."""
    names: dict[int, tuple[str, str]] = {}
    ordered = sorted(owners, key=lambda o: hasattr(o, "param_groups"))
    for owner in ordered:
        named = getattr(owner, "_named_tensors", None)
        if named is not None:
            for name, t, kind in named(names):
                names.setdefault(id(t), (name, kind))
    return names


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return out


# ---- arguments ------------------------------------------------------------------------------


def _is_tensor_like(x) -> bool:
    return isinstance(x, (Tensor, np.ndarray))


def _signature(args, kwargs) -> tuple[Sequence, Any]:
    """(leaves, cache key) of a call: shapes, dtypes and requires_grad of its tensors, the
    values of everything else, and the nesting."""
    if not kwargs and all(type(a) is Tensor and a._data is not None for a in args):
        # the common case, tensors only: no tree to flatten
        return args, tuple((a._data.shape, a._data.dtype, a._requires_grad) for a in args)
    leaves, treedef = flatten((args, kwargs))
    return leaves, (treedef, tuple(_leaf_signature(x) for x in leaves))


def _leaf_signature(x):
    if isinstance(x, Tensor):
        x._check_eager()
        return ("T", tuple(x.shape), x.dtype.name, x.requires_grad)
    if isinstance(x, np.ndarray):
        return ("T", x.shape, x.dtype.str, False)
    try:
        hash(x)
    except TypeError:
        raise TraceError(
            f"compiled functions take tensors, arrays, numbers, strings and "
            f"tuples/lists/dicts of them; got an unhashable "
            f"{type(x).__name__}"
        ) from None
    return ("C", type(x).__name__, x)


def _argument_names(fn, args, kwargs, n: int) -> list[str]:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        top = list(bound.arguments.items())
    except (TypeError, ValueError):
        top = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    names = []
    for name, value in top:
        leaves, _ = flatten(value)
        if len(leaves) == 1:
            names.append(name)
        else:
            names += [f"{name}.{i}" for i in range(len(leaves))]
    if len(names) != n:  # *args/**kwargs packing changed the order: fall back to positions
        names = [f"arg{i}" for i in range(n)]
    return names


def _rebuild(args, kwargs, leaves):
    _, treedef = flatten((args, kwargs))
    return unflatten(treedef, leaves)
