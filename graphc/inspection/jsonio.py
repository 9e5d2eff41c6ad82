"""The IR as JSON, in the stable schema of docs/ir.schema.json (format "graphc.inspect",
version 1). Values are named as in the text IR (`%x`, `%3`), so the two can be read side by
side; every attribute is written, defaults included, so a reader needs no op table.

Additions that keep old readers working (new optional keys) keep the version; anything
else bumps it.
"""

from __future__ import annotations

import math
from typing import Any

from graphc.dtypes import DType
from graphc.inspection.text import kernel_membership
from graphc.ir import Body, ConstArray, Graph, Node, TensorType, shorten_path
from graphc.printer import value_names

FORMAT = "graphc.inspect"
VERSION = 1


def type_json(t: TensorType) -> dict[str, Any]:
    return {"dtype": t.dtype.short, "shape": list(t.shape)}


def value_json(value: Any, names: dict[Node, str] | None = None) -> Any:
    """An attribute or kernel parameter as JSON. Non-finite floats, dtypes, arrays and node
    references become one-key objects, so no value is ambiguous."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, DType):
        return {"dtype": value.short}
    if isinstance(value, ConstArray):
        a = value.array
        out: dict[str, Any] = {
            "dtype": str(a.dtype),
            "shape": list(a.shape),
            "sha256": value._digest,
        }
        if a.size <= 16:
            out["values"] = [value_json(v.item()) for v in a.reshape(-1)]
        return {"array": out}
    if isinstance(value, Node):
        return {"value": (names or {}).get(value, value.op)}
    if isinstance(value, Body):  # a loop's step graph, with its own value names
        return {"body": graph_json(value.graph, "body")}
    if isinstance(value, (tuple, list)):
        return [value_json(v, names) for v in value]
    return {"repr": repr(value)}


def loc_json(node: Node) -> dict[str, Any] | None:
    if node.loc is None:
        return None
    return {"file": shorten_path(node.loc.file), "line": node.loc.line, "func": node.loc.func}


def graph_json(graph: Graph, stage: str) -> dict[str, Any]:
    names = value_names(graph)
    schedule = graph.meta.get("schedule")
    plan = graph.meta.get("memory")
    kernels_of, stored_by = kernel_membership(graph)
    nodes = []
    for i, n in enumerate(graph.nodes):
        k = stored_by.get(n) or (kernels_of[n][0] if n in kernels_of else None)
        b = plan.buffers.get(n) if plan is not None else None
        nodes.append(
            {
                "id": names[n],
                "index": i,
                "op": n.op,
                "inputs": [names[x] for x in n.inputs],
                "attrs": {key: value_json(v) for key, v in n.attrs.items()},
                "type": type_json(n.type),
                "loc": loc_json(n),
                "kernel": k,
                "buffer": buffer_json(b, names) if b is not None else None,
            }
        )
    return {
        "name": graph.name,
        "stage": stage,
        "hash": graph.structural_hash(),
        "inputs": [names[n] for n in graph.inputs],
        "outputs": [
            {"name": name, "value": names[o]}
            for name, o in zip(graph.output_names, graph.outputs, strict=True)
        ],
        "updates": dict(graph.meta.get("updates", {})),
        "nodes": nodes,
        "schedule": schedule_json(graph) if schedule is not None else None,
        "memory": memory_json(graph) if plan is not None else None,
    }


def buffer_json(b, names: dict[Node, str]) -> dict[str, Any]:
    return {
        "kind": b.kind,
        "nbytes": b.nbytes,
        "offset": b.offset,
        "base": names[b.base] if b.base is not None else None,
        "live": list(b.live),
    }


def schedule_json(graph: Graph) -> dict[str, Any]:
    from graphc.inspection.reports import decision_taken

    names = value_names(graph)
    schedule = graph.meta["schedule"]
    threads = graph.meta.get("parallel")  # after plan_parallel
    tiles = graph.meta.get("tiles")  # after plan_tiles
    plans = tiles.kernels if tiles is not None else {}
    return {
        "kernels": [
            {
                "name": k.name,
                "kind": k.kind,
                "root": names[k.root],
                "nodes": [names[n] for n in k.nodes],
                "outputs": [names[n] for n in k.outputs],
                "reads": [names[n] for n in k.reads()],
                "reason": k.reason,
                "params": {key: value_json(v, names) for key, v in sorted(k.params.items())},
                "tiles": {"plan": plans[k.name].text, "reason": plans[k.name].reason}
                if k.name in plans
                else None,
                "threads": None
                if threads is None
                else {"parallel": k.name in threads.parallel, "reason": threads.reasons[k.name]},
            }
            for k in schedule.kernels
        ],
        "decisions": [{"text": d, "taken": decision_taken(d)} for d in schedule.decisions],
    }


def memory_json(graph: Graph) -> dict[str, Any]:
    from graphc.inspection.reports import memory_report

    return memory_report(graph).to_json()


def document(target: str, mode: str, **sections: Any) -> dict[str, Any]:
    """The top-level object `graphc inspect --format json` prints."""
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "target": target, "mode": mode}
    doc.update({k: v for k, v in sections.items() if v is not None})
    return doc
