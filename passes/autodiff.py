"""derive_backward: symbolic reverse-mode differentiation on the IR.

Each `grad(loss, wrt[, seed])` placeholder is replaced by the backward subgraph of `loss`.
Placeholders sharing a loss share one reverse sweep. The sweep walks the nodes that lie on a
path from some `wrt` to the loss in reverse topological order, asks each op's VJP rule for
its inputs' cotangents and sums cotangents where a value fans out. Nodes the rules emit that
no requested gradient needs (the gradient of the input images, say) are dropped at once.
"""

from __future__ import annotations

from graphc.errors import GraphcError
from graphc.ir import Graph, GraphBuilder, Node
from graphc.ops import OPS, NoGrad
from graphc.verify import VerifyError


class AutodiffError(GraphcError, RuntimeError):
    """The graph asks for a derivative graphc cannot produce."""


def derive_backward(graph: Graph) -> Graph:
    placeholders = [n for n in graph.nodes if n.op == "grad"]
    if not placeholders:
        return graph
    b = GraphBuilder.from_graph(graph)
    b.nodes = []
    env: dict[Node, Node] = {}
    for node in graph.nodes:
        if node.op != "grad":
            ins = tuple(env[i] for i in node.inputs)
            env[node] = b.append(node.with_inputs(ins))
            continue
        if node in env:
            continue
        group = [
            p
            for p in placeholders
            if p.inputs[0] is node.inputs[0] and p.inputs[2:] == node.inputs[2:] and p not in env
        ]
        loss = env[node.inputs[0]]
        seed = env[node.inputs[2]] if len(node.inputs) > 2 else None
        wrts = [env.get(p.inputs[1]) for p in group]
        grads = backward(b, loss, wrts, seed, [p.inputs[1].type for p in group])
        for p, g in zip(group, grads, strict=True):
            env[p] = g
    return Graph(
        b.nodes, [env[o] for o in graph.outputs], graph.output_names, graph.name, graph.meta
    )


def backward(
    b: GraphBuilder, loss: Node, wrts: list[Node | None], seed: Node | None = None, wrt_types=None
) -> list[Node]:
    """Emits into `b` the gradients of `loss` with respect to each of `wrts`.

    A `wrt` of None (not yet defined when the loss was computed) gets zeros of its type.
    """
    start = len(b.nodes)
    saved_loc = b.loc
    b.loc = loss.loc
    seeds = {loss: seed if seed is not None else b.full_like(loss, 1.0)}
    grads = _sweep(b, start, seeds, wrts, wrt_types, loss.loc)
    b.loc = saved_loc
    _drop_unused(b, start, grads)
    return grads


def backward_from(b: GraphBuilder, seeds: dict[Node, Node], wrts: list[Node]) -> list[Node]:
    """Gradients of sum_k <out_k, seeds[out_k]> with respect to each of `wrts`: the VJP of
    several outputs at once (a loop body's new carries and per-step outputs)."""
    start = len(b.nodes)
    grads = _sweep(b, start, dict(seeds), wrts, None, b.loc)
    _drop_unused(b, start, grads)
    return grads


def _sweep(b: GraphBuilder, start: int, ct: dict[Node, Node], wrts, wrt_types, loc) -> list[Node]:
    """The reverse sweep from the seeded cotangents `ct` over the nodes before `start`."""
    active = _active(b.nodes, list(ct), [w for w in wrts if w is not None])
    for node in reversed([n for n in b.nodes[:start] if n in active]):
        g = ct.get(node)
        if g is None or node.is_input:
            continue
        op = OPS[node.op]
        if isinstance(op.vjp, NoGrad):
            if op.vjp.unsupported:
                where = f" at {node.loc}" if node.loc else ""
                raise AutodiffError(f"cannot differentiate {node.op}{where}: {op.vjp.reason}")
            continue
        b.loc = node.loc
        cts = op.vjp(b, g, node, *node.inputs, **node.attrs)
        if len(cts) != len(node.inputs):
            raise VerifyError(
                f"VJP of {node.op} returned {len(cts)} cotangents for {len(node.inputs)} inputs"
            )
        for inp, c in zip(node.inputs, cts, strict=True):
            if c is None or inp not in active:
                continue
            if c.type != inp.type:
                raise VerifyError(
                    f"VJP of {node.op} gave a {c.type} cotangent for a {inp.type} input"
                )
            ct[inp] = b.add(ct[inp], c) if inp in ct else c
    b.loc = loc
    types = wrt_types or [w.type for w in wrts]
    grads = []
    for w, t in zip(wrts, types, strict=True):
        g = ct.get(w) if w is not None else None
        grads.append(g if g is not None else b.full(0.0, t.shape, t.dtype))
    return grads


def _active(nodes: list[Node], losses: list[Node], wrts: list[Node]) -> set[Node]:
    """Floating-point nodes on some path from a wrt to a loss."""
    ancestors: set[Node] = set()
    stack = list(losses)
    while stack:
        n = stack.pop()
        if n not in ancestors:
            ancestors.add(n)
            stack.extend(n.inputs)
    reach = {w for w in wrts if w in ancestors}
    for n in nodes:  # topological order: one forward scan finds the descendants
        if n in ancestors and n not in reach and any(i in reach for i in n.inputs):
            reach.add(n)
    return {n for n in reach if n.dtype.is_floating_point}


def _drop_unused(b: GraphBuilder, start: int, grads: list[Node]) -> None:
    new = b.nodes[start:]
    keep: set[Node] = set()
    stack = [g for g in grads]
    fresh = set(new)
    while stack:
        n = stack.pop()
        if n in fresh and n not in keep:
            keep.add(n)
            stack.extend(n.inputs)
    b.nodes[start:] = [n for n in new if n in keep]
