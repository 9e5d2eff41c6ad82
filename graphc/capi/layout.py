"""What an exported library holds and where: the layout of its state, how each graph input
and output is bound, the program that computes the host scalars, and the structure record
of its weights files. Pure data, taken from a traced step (frontend/compile.py's Entry);
csource.py writes it as C tables and abi.py as NAME.json.

The state block holds every tensor the library keeps between calls, each 64-byte aligned:
the model's state_dict (saved under its names), the optimizer's per-parameter state (saved
as "optimizer/state/<i>/<key>", as graphc.save names an optimizer state_dict under
"optimizer"), the random-number generator's (seed, offset) if the step draws, and
constants the step reads (never saved).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.frontend.bindings import (
    ArgGradSink,
    ArgSource,
    GradSink,
    GradSource,
    HostSource,
    ReturnSink,
    TensorSink,
    TensorSource,
)
from graphc.host_scalars import AdamScalars, RandomScalars, SGDScalars
from graphc.ir import Graph, Node

ALIGN = 64
TRAIN, INFERENCE = "train", "inference"
SAFETENSORS_DTYPES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


class ExportError(GraphcError):
    """A step or model that cannot become a library, or a library that cannot be built."""


@dataclass
class Stored:
    """A tensor of the state block."""

    name: str | None  # in weights files; None: a constant, never saved
    alias: str | None  # also accepted when loading
    value: np.ndarray  # at export: the library's initial value
    offset: int = 0
    role: str = "model"  # "model" | "optimizer" | "rng" | "constant"
    entry: int = -1  # the optimizer entry it belongs to

    @property
    def nbytes(self) -> int:
        return int(self.value.nbytes)

    @property
    def st_dtype(self) -> str:
        return SAFETENSORS_DTYPES[self.value.dtype]

    @property
    def required(self) -> bool:
        return self.role == "model"


@dataclass
class OptimizerEntry:
    """One parameter's optimizer state: state_dict()["state"][index]."""

    index: int
    keys: list[str]
    first: int  # its tensors: tensors[first : first + len(keys)]
    present: bool  # at export (an SGD buffer before its first step is not, nor Adam's)


@dataclass
class Binding:
    kind: str  # "argument" | "state" | "scalar"
    index: int  # the argument, the stored tensor, or the scalar slot


@dataclass
class Argument:
    name: str  # "inputs", "labels"
    node: Node
    classes: int | None = None  # labels: valid values 0..classes-1 ...
    ignore: int | None = None  # ... and this one

    @property
    def count(self) -> int:
        return int(math.prod(self.node.shape))


@dataclass(frozen=True)
class Location:
    in_arena: bool
    where: int  # arena offset, or graph input index


@dataclass
class Scalar:
    """One host-computed value (graphc/host_scalars.py); see runtime.h's enum grt_op."""

    op: str
    name: str
    dtype: np.dtype
    slot: int = -1
    group: int = -1
    entry: int = -1
    tensor: int = -1
    a: float = 0.0
    n: int = 0


@dataclass
class Layout:
    name: str
    kind: str  # TRAIN or INFERENCE
    graph: Graph
    arguments: list[Argument]
    result: Location
    result_node: Node
    inputs: list[Binding]
    tensors: list[Stored]
    entries: list[OptimizerEntry]
    scalars: list[Scalar]
    slots: int
    writebacks: list[tuple[Location, int]]
    lr_ratio: list[float]
    lr_initial: list[float]
    tree: list[tuple[str, str | int]]  # ("text", escaped JSON) | ("state", 0) | ("lr", group)
    entry_fragments: list[str]  # escaped
    kernel_errors: list[str | None]
    state_bytes: int = 0
    outputs: list[dict] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return self.graph.meta["memory"].arena_bytes

    @property
    def uses_lr(self) -> bool:
        return any(s.op == "lr" for s in self.scalars)

    @property
    def file_order(self) -> list[int]:
        """The saved tensors in the order a file holds them: widest items first, as
        graphc.save does, so every tensor's data is aligned to its item size."""
        saved = [i for i, t in enumerate(self.tensors) if t.name is not None]
        return sorted(saved, key=lambda i: -self.tensors[i].value.dtype.itemsize)


def escaped(text: str) -> str:
    """`text` as the inside of a JSON string (the structure record is JSON inside JSON)."""
    return json.dumps(text)[1:-1]


def _compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def build_layout(entry, name: str, kind: str) -> Layout:
    """The layout of the library for a traced step or forward (an Entry with its owners)."""
    graph: Graph = entry.graph
    if [n.name for n in graph.inputs] != [n.name for n in entry.traced.inputs]:
        raise AssertionError("the pass pipeline changed the step's inputs")
    model, model_tensors = _model(entry.owners)
    optimizer = _optimizer(entry.owners)
    tensors: list[Stored] = []
    by_data: dict[int, int] = {}  # id(numpy array) -> stored index

    def add(stored: Stored, array: np.ndarray) -> int:
        by_data.setdefault(id(array), len(tensors))
        tensors.append(stored)
        return len(tensors) - 1

    for key, t in model_tensors.items():
        add(Stored(key, f"model/{key}", _value(t)), t._data)
    entries: list[OptimizerEntry] = []
    if optimizer is not None:
        entries = _optimizer_entries(optimizer, tensors, add)
    plan = graph.meta["memory"]
    arguments: list[Argument] = []
    inputs: list[Binding] = []
    host_inputs: dict[tuple[int, int], int] = {}  # (id(group), k) -> graph input index
    for i, (node, source) in enumerate(zip(graph.inputs, entry.sources, strict=True)):
        if isinstance(source, ArgSource):
            inputs.append(Binding("argument", len(arguments)))
            arguments.append(Argument(f"arg{source.index}", node))
        elif isinstance(source, TensorSource):
            data = source.tensor._data
            if id(data) not in by_data:
                add(Stored(None, None, np.array(data), role="constant"), data)
            inputs.append(Binding("state", by_data[id(data)]))
        elif isinstance(source, HostSource):
            host_inputs[(id(source.group), source.k)] = i
            inputs.append(Binding("scalar", -1))  # its slot, below
        elif isinstance(source, GradSource):
            raise ExportError(
                f"the step reads {node.name}, a gradient left by the previous call: it "
                "accumulates gradients across calls. Call optimizer.zero_grad() at the start "
                "of the step to export it"
            )
        else:
            raise ExportError(f"graph input {node.name} comes from {type(source).__name__}")
    program, rng = _scalar_program(entry.host_groups, optimizer, entries, tensors, add)
    scalars, slots = [], 0
    for key, scalar in program:
        i = host_inputs.get(key)
        if i is not None:
            scalar.slot = slots
            inputs[i].index = slots
            slots += 1
        scalars.append(scalar)
    if any(b.kind == "scalar" and b.index < 0 for b in inputs):
        raise AssertionError("a host scalar of the graph has no recipe value")
    _name_arguments(arguments, kind)
    _label_ranges(graph, arguments)

    def where(node: Node) -> Location:
        st = plan.storage(node)
        if st.kind == "input":
            return Location(False, graph.inputs.index(st.value))
        return Location(True, int(st.offset))

    result, writebacks, outputs = None, [], []
    for node, out_name, sink in zip(graph.outputs, graph.output_names, entry.sinks, strict=True):
        loc = where(node)
        if not loc.in_arena and inputs[loc.where].kind == "argument":
            raise ExportError(
                f"the step writes {out_name} into its argument "
                f"{graph.inputs[loc.where].name} in place; a library takes its batch "
                "read-only (const): compute a new tensor instead"
            )
        row = dict(name=out_name, shape=list(node.shape), dtype=node.dtype.name)
        row.update(_storage_text(loc, graph))
        if isinstance(sink, ReturnSink):
            if result is not None:
                raise ExportError(_returns_message(kind))
            result, result_node = loc, node
            row["role"] = "loss" if kind == TRAIN else "output"
        elif isinstance(sink, TensorSink):
            data = sink.tensor._data
            if id(data) not in by_data:
                add(Stored(None, None, np.array(data), role="constant"), data)
            target = by_data[id(data)]
            in_place = not loc.in_arena and inputs[loc.where] == Binding("state", target)
            if not in_place:
                writebacks.append((loc, target))
            row["role"] = "state update"
            row["updates"] = tensors[target].name
        elif isinstance(sink, (GradSink, ArgGradSink)):
            row["role"] = "gradient (left in the arena)"
        outputs.append(row)
    if result is None:
        raise ExportError(_returns_message(kind))
    _check_result(result_node, kind)
    state_bytes = 0
    for t in tensors:
        t.offset = state_bytes
        state_bytes += -(-max(t.nbytes, 1) // ALIGN) * ALIGN
    ratio, initial = _learning_rates(optimizer)
    tree, fragments = _tree(kind, model_tensors, tensors, entries, optimizer, rng)
    return Layout(
        name=name,
        kind=kind,
        graph=graph,
        arguments=arguments,
        result=result,
        result_node=result_node,
        inputs=inputs,
        tensors=tensors,
        entries=entries,
        scalars=scalars,
        slots=slots,
        writebacks=writebacks,
        lr_ratio=ratio,
        lr_initial=initial,
        tree=tree,
        entry_fragments=fragments,
        kernel_errors=_kernel_errors(graph),
        state_bytes=state_bytes,
        outputs=outputs,
    )


def _value(t) -> np.ndarray:
    data = t._data
    if data is None or data.dtype not in SAFETENSORS_DTYPES:
        raise ExportError(f"a model tensor of dtype {getattr(data, 'dtype', None)} cannot be saved")
    return np.array(data, order="C", copy=True)  # (ascontiguousarray makes 0-d arrays 1-d)


# ---- the model and the optimizer -------------------------------------------------------------


def _model(owners) -> tuple[object | None, dict]:
    """The outermost module the step called, and its state_dict (the tensors themselves)."""
    from graphc.nn.module import Module

    modules = [o for o in owners if isinstance(o, Module)]
    if not modules:
        return None, {}
    top = modules[0]
    inside = {id(m) for m in top.modules()}
    others = [m for m in modules if id(m) not in inside and m.state_dict()]
    if others:
        raise ExportError(
            f"the step uses two models with weights, {type(top).__name__} and "
            f"{type(others[0]).__name__}; a library holds one: make one a submodule of the "
            "other (an nn.Module holding both)"
        )
    return top, dict(top.state_dict(keep_vars=True))


def _optimizer(owners):
    optimizers = [o for o in owners if hasattr(o, "param_groups")]
    if len(optimizers) > 1:
        raise ExportError(
            "the step steps two optimizers; a library holds one (use parameter groups)"
        )
    return optimizers[0] if optimizers else None


def _param_index(optimizer) -> dict[int, int]:
    """id(param) -> its number in the optimizer's state_dict (group order)."""
    index: dict[int, int] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            index.setdefault(id(p), len(index))
    return index


def _optimizer_entries(optimizer, tensors: list[Stored], add) -> list[OptimizerEntry]:
    from graphc.tensor import Tensor

    entries = []
    index = _param_index(optimizer)
    for g in optimizer.param_groups:
        for p in g["params"]:
            st = optimizer.state.get(p)
            keys = [k for k in (st or {}) if not k.startswith("_")]
            if not keys or any(e.index == index[id(p)] for e in entries):
                continue
            first = len(tensors)
            for k in keys:
                v = st[k]
                if not isinstance(v, Tensor) or v._data is None:
                    raise ExportError(
                        f"{type(optimizer).__name__} keeps {k}={v!r} per parameter, which is "
                        "not a tensor; a library carries tensor state only"
                    )
                name = f"optimizer/state/{index[id(p)]}/{k}"
                add(Stored(name, None, _value(v), role="optimizer", entry=len(entries)), v._data)
            # PyTorch has no state for a parameter before its first step; graphc makes it
            # at the trace, marked fresh (SGD) or with step 0 (Adam).
            fresh = st.get("_fresh", False) or ("step" in st and float(st["step"]._data) == 0)
            present = not fresh
            entries.append(OptimizerEntry(index[id(p)], keys, first, present))
    return entries


def _learning_rates(optimizer) -> tuple[list[float], list[float]]:
    """Each group's lr, and its ratio to the first group's: the C `lr` sets the first
    group's, and the others keep their ratio to it (as a schedule scales every group)."""
    if optimizer is None:
        return [], []
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    first = lrs[0]
    ratio = [1.0 if first == 0 or lr == first else lr / first for lr in lrs]
    return ratio, lrs


# ---- host scalars ---------------------------------------------------------------------------


def _scalar_program(groups, optimizer, entries, tensors, add):
    """Every host function's values in call order, as recipe ops, each keyed by (id(group),
    k) so its graph input finds its slot. Values no graph input reads are computed too: the
    functions' effects (a step count, a first-step mark, the generator's offset) happen on
    every call whatever the graph reads."""
    program: list[tuple[tuple[int, int], Scalar]] = []
    rng: int | None = None
    entry_of = {}
    if optimizer is not None:
        index = _param_index(optimizer)
        by_param = {e.index: k for k, e in enumerate(entries)}
        for p, st in optimizer.state.items():
            if id(p) in index and index[id(p)] in by_param:
                entry_of[id(st)] = by_param[index[id(p)]]
    for group in groups:
        recipe, dtype = group.recipe, np.dtype(group.dtype)
        if recipe is None:
            name = getattr(group.fn, "__qualname__", repr(group.fn))
            raise ExportError(
                f"the step computes values on the host with {name}, which a library without "
                "Python cannot run; export supports the SGD, Adam and AdamW optimizers and "
                "random draws (dropout), not collectives or custom host functions"
            )
        if isinstance(recipe, RandomScalars):
            if rng is None:
                seed_offset = np.array([recipe.generator.seed, recipe.generator.offset], np.int64)
                rng = add(Stored("rng", None, seed_offset, role="rng"), seed_offset)
            ops = [
                Scalar("rng_seed", "seed", dtype, tensor=rng),
                Scalar("rng_offset", "offset", dtype, tensor=rng, n=int(recipe.n)),
            ]
        elif isinstance(recipe, (SGDScalars, AdamScalars)):
            if recipe.optimizer is not optimizer:
                raise AssertionError("host scalars of an optimizer the trace did not note")
            ops = _optimizer_ops(recipe, optimizer, entry_of, tensors, dtype)
        else:
            raise ExportError(f"no C translation for host values {type(recipe).__name__}")
        program += [((id(group), k), op) for k, op in enumerate(ops)]
    return program, rng


def _optimizer_ops(recipe, optimizer, entry_of, tensors, dtype) -> list[Scalar]:
    g = next(i for i, grp in enumerate(optimizer.param_groups) if grp is recipe.group)
    group = recipe.group
    entries = [entry_of[id(st)] for st in recipe.states]
    if isinstance(recipe, SGDScalars):
        ops = [Scalar("lr", "lr", dtype, group=g)]
        for i, e in enumerate(entries):
            keep = float(group["momentum"])
            mix = 1.0 - float(group["dampening"])
            ops.append(Scalar("sgd_keep", f"keep{i}", dtype, group=g, entry=e, a=keep))
            ops.append(Scalar("sgd_mix", f"mix{i}", dtype, group=g, entry=e, a=mix))
        return ops
    beta1, beta2 = (float(b) for b in group["betas"])
    decay = float(group["weight_decay"])
    ops = [
        Scalar("lr", "lr", dtype, group=g),
        Scalar("adam_decay", "decay", dtype, group=g, a=decay),
    ]
    for i, e in enumerate(entries):
        step = next(k for k, t in enumerate(tensors) if t.entry == e and t.name.endswith("/step"))
        if tensors[step].value.dtype != np.float32 or tensors[step].value.shape != ():
            raise ExportError("Adam's step count must be a float32 scalar tensor")
        common = dict(group=g, entry=e, tensor=step)
        ops.append(Scalar("adam_step", f"step_size{i}", dtype, a=beta1, **common))
        ops.append(Scalar("adam_bc2", f"bias_correction2_sqrt{i}", dtype, a=beta2, **common))
    return ops


# ---- arguments and results ----------------------------------------------------------------


def _name_arguments(arguments: list[Argument], kind: str) -> None:
    """The step's arguments are (inputs, labels), in either order; a forward's (inputs)."""
    floats = [a for a in arguments if a.node.dtype.name == "float32"]
    ints = [a for a in arguments if a.node.dtype.name == "int64"]
    if kind == TRAIN and len(arguments) == 2 and len(floats) == 1 and len(ints) == 1:
        floats[0].name, ints[0].name = "inputs", "labels"
        return
    if kind == INFERENCE and len(arguments) == 1 and len(floats) == 1:
        floats[0].name = "inputs"
        return
    got = ", ".join(f"{a.node.name}: {a.node.type}" for a in arguments) or "none"
    if kind == TRAIN:
        raise ExportError(
            "a training step exports as NAME_step(ctx, inputs, labels, lr, loss): it must take "
            f"a float32 batch and int64 labels (got {got})"
        )
    raise ExportError(
        "a forward exports as NAME_forward(ctx, inputs, outputs): it must take one float32 "
        f"batch (got {got})"
    )


def _label_ranges(graph: Graph, arguments: list[Argument]) -> None:
    """Labels feeding one_hot (the losses' class indices) are checked before the step runs:
    a bad label is an error code, and the parameters stay as they were."""
    for a in arguments:
        if a.name != "labels":
            continue
        for n in graph.nodes:
            if n.op == "one_hot" and n.inputs[0] is a.node:
                classes = int(n.attrs["num_classes"])
                ignore = n.attrs.get("ignore_index")
                a.classes = classes if a.classes is None else min(a.classes, classes)
                a.ignore = ignore if a.ignore in (None, ignore) else None


def _returns_message(kind: str) -> str:
    if kind == TRAIN:
        return "a training step must return its loss (one float32 scalar tensor), and only it"
    return "a forward must return one float32 tensor (the logits), and only it"


def _check_result(node: Node, kind: str) -> None:
    if node.dtype.name != "float32" or (kind == TRAIN and node.shape != ()):
        raise ExportError(f"{_returns_message(kind)}; it returns {node.type}")


def _storage_text(loc: Location, graph: Graph) -> dict:
    if loc.in_arena:
        return {"storage": "arena", "offset": loc.where}
    return {"storage": "in place", "input": graph.inputs[loc.where].name}


def _kernel_errors(graph: Graph) -> list[str | None]:
    out = []
    for k in graph.meta["schedule"].kernels:
        if k.root.op == "one_hot":
            c = k.root.attrs["num_classes"]
            out.append(f"a class index outside 0..{c - 1} in the labels")
        else:
            out.append(None)
    return out


# ---- the structure record of saved files ------------------------------------------------------


def _tree(kind, model_tensors, tensors, entries, optimizer, rng):
    """Pieces of the "tree" graphc.load reads (serialization.py's encoding): text, the
    present optimizer entries, each group's lr at the time of saving."""
    model = {"$map": {k: {"$tensor": k} for k in model_tensors}}
    if kind == INFERENCE or optimizer is None:
        return [("text", escaped(_compact(model)))], []
    from graphc.serialization import _encode

    fragments = []
    for e in entries:
        state = {k: {"$tensor": tensors[e.first + i].name} for i, k in enumerate(e.keys)}
        fragments.append(escaped(_compact([e.index, {"$map": state}])))
    pieces: list[tuple[str, str | int]] = [
        ("text", escaped('{"$map":{"model":' + _compact(model)) + escaped(',"optimizer":'))
    ]
    pieces.append(("text", escaped('{"$map":{"state":')))
    pieces.append(("state", 0))
    pieces.append(("text", escaped(',"param_groups":[')))
    index = _param_index(optimizer)
    marker = "\x00lr\x00"
    for g, group in enumerate(optimizer.param_groups):
        fields = {k: v for k, v in group.items() if k != "params"}
        fields["lr"] = marker
        fields["params"] = [index[id(p)] for p in group["params"]]
        text = _compact(_encode(fields, "", [], set()))
        before, after = text.split(_compact(marker))
        pieces.append(("text", escaped(("," if g else "") + before)))
        pieces += [("lr", g), ("text", escaped(after))]
    tail = "]}}"
    if rng is not None:
        tail += ',"rng":{"$ndarray":"rng"}'
    pieces.append(("text", escaped(tail + "}}")))
    return pieces, fragments


STATE_EMPTY = escaped('{"$map":{}}')
STATE_OPEN = escaped('{"$dict":[')
STATE_CLOSE = escaped("]}")
