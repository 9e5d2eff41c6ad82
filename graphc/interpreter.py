"""The reference interpreter: runs any graph node by node with the ops' numpy references.

It is the executable meaning of a graph. Eager backward, `graphc check`, the pass tests and
(until native code replaces it) compiled functions all run on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.ir import Graph, Node
from graphc.ops import OPS


class ExecutionError(GraphcError, RuntimeError):
    """An op failed while running (e.g. a class index out of range)."""


def check_input(node: Node, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    t = node.type
    if value.shape != t.shape or value.dtype != np.dtype(t.dtype.np):
        raise ShapeError(f"input {node.name!r} expects {t}, got {value.dtype}{list(value.shape)}")
    return value


def interpret(
    graph: Graph,
    inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray] = (),
    env: Mapping[Node, np.ndarray] | None = None,
    wanted: Sequence[Node] | None = None,
    keep: bool = False,
) -> list[np.ndarray]:
    """Values of `wanted` (default: the graph's outputs).

    `inputs` bind the graph's input nodes (by position or by name); `env` supplies values
    already known for any node (eager backward passes the forward values this way). Only
    nodes that `wanted` depends on run. With `keep`, every computed value is left in the
    returned list's `.env` (for `graphc check`); otherwise values are freed after last use.
    """
    values: dict[Node, np.ndarray] = dict(env or {})
    if isinstance(inputs, Mapping):
        for node in graph.inputs:
            if node.name in inputs:
                values[node] = check_input(node, inputs[node.name])
    else:
        if len(inputs) > len(graph.inputs):
            raise ShapeError(
                f"graph {graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}"
            )
        for node, value in zip(graph.inputs, inputs, strict=False):
            values[node] = check_input(node, value)
    wanted = list(graph.outputs if wanted is None else wanted)

    needed = _needed(wanted, values)
    last_use = {} if keep else _last_uses(graph, needed, wanted)
    for step, node in enumerate(graph.nodes):
        if node not in needed or node in values:
            continue
        if node.is_input:
            raise ShapeError(f"graph {graph.name}: no value was given for input {node.name!r}")
        values[node] = run_node(node, [values[i] for i in node.inputs])
        for i in last_use.get(step, ()):
            values.pop(i, None)
    result = [values[w] for w in wanted]
    if keep:
        return _WithEnv(result, values)
    return result


class _WithEnv(list):
    def __init__(self, items, env):
        super().__init__(items)
        self.env = env


def run_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    op = OPS[node.op]
    try:
        with np.errstate(all="ignore"):  # inf/nan follow IEEE rules, as in compiled code
            return op.evaluate(args, node.attrs, node.type)
    except (ValueError, IndexError, FloatingPointError) as e:
        where = f" at {node.loc}" if node.loc else ""
        raise ExecutionError(f"{node.op} failed{where}: {e}") from e


def _needed(wanted: Sequence[Node], known: Mapping[Node, np.ndarray]) -> set[Node]:
    needed: set[Node] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        if n not in known:
            stack.extend(n.inputs)
    return needed


def _last_uses(graph: Graph, needed: set[Node], wanted: Sequence[Node]) -> dict[int, list[Node]]:
    """step index -> values that nothing after that step reads (so they can be freed)."""
    last: dict[Node, int] = {}
    for step, n in enumerate(graph.nodes):
        if n in needed:
            for i in n.inputs:
                last[i] = step
    keep = set(wanted)
    out: dict[int, list[Node]] = {}
    for n, step in last.items():
        if n not in keep:
            out.setdefault(step, []).append(n)
    return out
