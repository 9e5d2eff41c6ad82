"""A traced step (frontend/compile.py's Entry, with its owners) as a library's layout: which
model and optimizer it carries, where each graph input comes from (an argument of
NAME_step/NAME_forward, the state block, a host scalar) and where each output goes (the
result, a state update, a gradient left in the arena)."""

from __future__ import annotations

from graphc.capi.layout import (
    TRAIN,
    Argument,
    Binding,
    ExportError,
    Layout,
    Location,
    StateBlock,
    Stored,
)
from graphc.capi.optimizer import (
    find_optimizer,
    learning_rates,
    optimizer_entries,
    scalar_program,
)
from graphc.capi.tree import tree
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
from graphc.ir import Graph, Node


def build_layout(entry, name: str, kind: str) -> Layout:
    """The layout of the library for a traced step or forward."""
    graph: Graph = entry.graph
    if [n.name for n in graph.inputs] != [n.name for n in entry.traced.inputs]:
        raise AssertionError("the pass pipeline changed the step's inputs")
    model_tensors = _model(entry.owners)
    optimizer = find_optimizer(entry.owners)
    state = StateBlock()
    for key, t in model_tensors.items():
        state.add(Stored(key, f"model/{key}", state.value(t)), t._data)
    entries = optimizer_entries(optimizer, state) if optimizer is not None else []
    arguments, inputs, host_inputs = _bind_inputs(graph, entry.sources, state)
    program, rng = scalar_program(entry.host_groups, optimizer, entries, state)
    scalars, slots = [], 0
    for key, scalar in program:
        i = host_inputs.pop(key, None)
        if i is not None:
            scalar.slot = inputs[i].index = slots
            slots += 1
        scalars.append(scalar)
    if host_inputs:
        raise AssertionError("a host scalar of the graph has no recipe value")
    _name_arguments(arguments, kind)
    _label_ranges(graph, arguments)
    result, result_node, writebacks, outputs = _bind_outputs(entry, kind, inputs, state)
    _check_result(result_node, kind)
    state_bytes = state.place()
    ratio, initial = learning_rates(optimizer)
    pieces, fragments = tree(kind, list(model_tensors), state.tensors, entries, optimizer, rng)
    return Layout(
        name=name,
        kind=kind,
        graph=graph,
        arguments=arguments,
        result=result,
        result_node=result_node,
        inputs=inputs,
        tensors=state.tensors,
        entries=entries,
        scalars=scalars,
        slots=slots,
        writebacks=writebacks,
        lr_ratio=ratio,
        lr_initial=initial,
        tree=pieces,
        entry_fragments=fragments,
        kernel_errors=_kernel_errors(graph),
        state_bytes=state_bytes,
        outputs=outputs,
    )


def _model(owners) -> dict:
    """The state_dict (the tensors themselves) of the outermost module the step called."""
    from graphc.nn.module import Module

    modules = [o for o in owners if isinstance(o, Module)]
    if not modules:
        return {}
    top = modules[0]
    inside = {id(m) for m in top.modules()}
    others = [m for m in modules if id(m) not in inside and m.state_dict()]
    if others:
        raise ExportError(
            f"the step uses two models with weights, {type(top).__name__} and "
            f"{type(others[0]).__name__}; a library holds one: make one a submodule of the "
            "other (an nn.Module holding both)"
        )
    return dict(top.state_dict(keep_vars=True))


def _bind_inputs(
    graph: Graph, sources: list, state: StateBlock
) -> tuple[list[Argument], list[Binding], dict[tuple[int, int], int]]:
    """(arguments, a binding per graph input, {(id(host group), k): graph input index});
    scalar bindings get their slots once the host program is known."""
    arguments: list[Argument] = []
    inputs: list[Binding] = []
    host_inputs: dict[tuple[int, int], int] = {}
    for i, (node, source) in enumerate(zip(graph.inputs, sources, strict=True)):
        if isinstance(source, ArgSource):
            inputs.append(Binding("argument", len(arguments)))
            arguments.append(Argument(f"arg{source.index}", node))
        elif isinstance(source, TensorSource):
            inputs.append(Binding("state", state.index(source.tensor._data)))
        elif isinstance(source, HostSource):
            host_inputs[(id(source.group), source.k)] = i
            inputs.append(Binding("scalar", -1))
        elif isinstance(source, GradSource):
            raise ExportError(
                f"the step reads {node.name}, a gradient left by the previous call: it "
                "accumulates gradients across calls. Call optimizer.zero_grad() at the start "
                "of the step to export it"
            )
        else:
            raise ExportError(f"graph input {node.name} comes from {type(source).__name__}")
    return arguments, inputs, host_inputs


def _bind_outputs(
    entry, kind: str, inputs: list[Binding], state: StateBlock
) -> tuple[Location, Node, list[tuple[Location, int]], list[dict]]:
    """(the result's location and node, the state updates not written in place, a row per
    output for NAME.json)."""
    graph = entry.graph
    plan = graph.meta["memory"]
    result = result_node = None
    writebacks, outputs = [], []
    for node, out_name, sink in zip(graph.outputs, graph.output_names, entry.sinks, strict=True):
        st = plan.storage(node)
        if st.kind == "input":
            loc = Location(False, graph.inputs.index(st.value))
        else:
            loc = Location(True, int(st.offset))
        if not loc.in_arena and inputs[loc.where].kind == "argument":
            raise ExportError(
                f"the step writes {out_name} into its argument "
                f"{graph.inputs[loc.where].name} in place; a library takes its batch "
                "read-only (const): compute a new tensor instead"
            )
        row = dict(name=out_name, shape=list(node.shape), dtype=node.dtype.name)
        if loc.in_arena:
            row.update(storage="arena", offset=loc.where)
        else:
            row.update(storage="in place", input=graph.inputs[loc.where].name)
        if isinstance(sink, ReturnSink):
            if result is not None:
                raise ExportError(_returns_message(kind))
            result, result_node = loc, node
            row["role"] = "loss" if kind == TRAIN else "output"
        elif isinstance(sink, TensorSink):
            target = state.index(sink.tensor._data)
            if loc.in_arena or inputs[loc.where] != Binding("state", target):
                writebacks.append((loc, target))
            row.update(role="state update", updates=state.tensors[target].name)
        elif isinstance(sink, (GradSink, ArgGradSink)):
            row["role"] = "gradient (left in the arena)"
        outputs.append(row)
    if result is None:
        raise ExportError(_returns_message(kind))
    return result, result_node, writebacks, outputs


def _name_arguments(arguments: list[Argument], kind: str) -> None:
    """The step's arguments are (inputs, labels), in either order; a forward's (inputs)."""
    floats = [a for a in arguments if a.node.dtype.name == "float32"]
    ints = [a for a in arguments if a.node.dtype.name == "int64"]
    if kind == TRAIN and len(arguments) == 2 and len(floats) == 1 and len(ints) == 1:
        floats[0].name, ints[0].name = "inputs", "labels"
        return
    if kind != TRAIN and len(arguments) == 1 and len(floats) == 1:
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
        uses = [n for n in graph.nodes if n.op == "one_hot" and n.inputs[0] is a.node]
        if uses:  # valid for every use: the fewest classes, an index all of them ignore
            a.classes = min(int(n.attrs["num_classes"]) for n in uses)
            ignored = {n.attrs.get("ignore_index") for n in uses}
            a.ignore = ignored.pop() if len(ignored) == 1 else None


def _returns_message(kind: str) -> str:
    if kind == TRAIN:
        return "a training step must return its loss (one float32 scalar tensor), and only it"
    return "a forward must return one float32 tensor (the logits), and only it"


def _check_result(node: Node, kind: str) -> None:
    if node.dtype.name != "float32" or (kind == TRAIN and node.shape != ()):
        raise ExportError(f"{_returns_message(kind)}; it returns {node.type}")


def _kernel_errors(graph: Graph) -> list[str | None]:
    """What a kernel's failure (its status) means, per kernel of the schedule."""
    out = []
    for k in graph.meta["schedule"].kernels:
        if k.root.op == "one_hot":
            c = k.root.attrs["num_classes"]
            out.append(f"a class index outside 0..{c - 1} in the labels")
        else:
            out.append(None)
    return out
