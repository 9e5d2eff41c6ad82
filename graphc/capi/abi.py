"""NAME.json: the library's ABI as data, for tools and bindings in other languages: its
functions, every graph input and output with its name, shape, dtype and where its bytes
live, the weights with their offsets in the state block, the memory sizes, the graph's hash
and the CPU features the library checks."""

from __future__ import annotations

from typing import Any

import graphc
from graphc.capi import layout as L
from graphc.capi.header import CODES

ABI_VERSION = 1


def abi(
    layout: L.Layout,
    target: dict[str, Any],
    threads: int | None,
    library: str,
    header: str,
) -> dict[str, Any]:
    n = layout.name
    graph = layout.graph
    functions = {
        "create": f"int {n}_create({n}_ctx **ctx, int num_threads)",
        "load_weights": f"int {n}_load_weights({n}_ctx *ctx, const char *path)",
        "save_weights": f"int {n}_save_weights({n}_ctx *ctx, const char *path)",
        "status": f"const char *{n}_status(const {n}_ctx *ctx)",
        "num_threads": f"int {n}_num_threads(const {n}_ctx *ctx)",
        "destroy": f"int {n}_destroy({n}_ctx *ctx)",
    }
    if layout.kind == L.TRAIN:
        functions["step"] = (
            f"int {n}_step({n}_ctx *ctx, const float *inputs, const int64_t *labels, "
            "float lr, float *loss)"
        )
    else:
        functions["forward"] = f"int {n}_forward({n}_ctx *ctx, const float *inputs, float *outputs)"
    arguments = []
    for a in layout.arguments:
        row = _tensor(a.node)
        row.update(name=a.name, graph_input=a.node.name, bytes=a.node.type.nbytes)
        if a.classes is not None:
            row["classes"] = a.classes
            if a.ignore is not None:
                row["ignore_index"] = a.ignore
        arguments.append(row)
    inputs = []
    for i, (node, b) in enumerate(zip(graph.inputs, layout.inputs, strict=True)):
        row = dict(index=i, name=node.name, kind=node.attrs["kind"], **_tensor(node))
        if b.kind == "argument":
            row.update(storage="argument", argument=layout.arguments[b.index].name)
        elif b.kind == "state":
            t = layout.tensors[b.index]
            row.update(storage="state", offset=t.offset, weight=t.name)
        else:
            row.update(storage="scalars", offset=8 * b.index)
        inputs.append(row)
    weights = [
        dict(
            name=t.name,
            role=t.role,
            shape=list(t.value.shape),
            dtype=t.value.dtype.name,
            offset=t.offset,
            bytes=t.nbytes,
            saved=t.name is not None,
            required_when_loading=t.required,
        )
        for t in layout.tensors
    ]
    scalars = [
        dict(name=s.name, computes=s.op, dtype=str(s.dtype), slot=s.slot) for s in layout.scalars
    ]
    return {
        "format": "graphc-export",
        "abi_version": ABI_VERSION,
        "graphc_version": graphc.__version__,
        "name": n,
        "kind": layout.kind,
        "library": library,
        "header": header,
        "graph_hash": graph.structural_hash(),
        "target": target,
        "threads": "serial" if threads == 1 else "pool",
        "default_threads": threads,
        "arena_bytes": layout.arena_bytes,
        "state_bytes": layout.state_bytes,
        "functions": functions,
        "error_codes": {f"{n.upper()}_{code}": value for code, value, _ in CODES},
        "arguments": arguments,
        "result": dict(
            name="loss" if layout.kind == L.TRAIN else "outputs",
            **_tensor(layout.result_node),
            bytes=layout.result_node.type.nbytes,
        ),
        "inputs": inputs,
        "outputs": layout.outputs,
        "weights": weights,
        "scalars": scalars,
    }


def _tensor(node) -> dict[str, Any]:
    return {"shape": list(node.shape), "dtype": node.dtype.name}
