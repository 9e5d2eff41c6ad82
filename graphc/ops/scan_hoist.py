"""Gradients of loop consts summed after the reverse loop, not in it.

A const's gradient is the sum of its contributions from every step. The reverse loop carries
that sum as an accumulator, but two common contributions are better summed all at once:
  - matmul(A_t, B_t, trans_a=True), a weight's gradient (an LSTM's W_hh: dgates^T h): the
    sum over steps is one matmul of the stacked A and B, [T*N, .]^T [T*N, .], a large
    product instead of T small ones and T additions of a whole weight matrix;
  - reduce_sum(A_t, axes=(0,)), a bias's gradient: one reduction over the stacked A.
A_t and B_t are per-step values the reverse loop has anyway: per-step inputs (their stacks
exist already), or values it computes, which it then returns as extra per-step outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphc.ir import Graph, Node


@dataclass(frozen=True)
class Hoisted:
    const: int  # the forward const whose gradient this is
    kind: str  # "matmul" | "sum"
    operands: tuple[tuple[str, int], ...]  # ("x", reverse-body step input) or ("y", extra y)
    shape: tuple[int, ...]  # the gradient's shape


def _summand(out: Node, acc: Node) -> tuple[str, tuple[Node, ...]] | None:
    """(kind, per-step operands) if out = acc + one of the two summands above."""
    if out.op != "add" or out.inputs[0] is not acc:
        return None
    t = out.inputs[1]
    if t.op == "matmul" and t.attrs["trans_a"] and not t.attrs["trans_b"]:
        a, b = t.inputs
        if a.type.rank == 2 and b.type.rank == 2:
            return "matmul", (a, b)
    s = t.inputs[0] if t.op == "reshape" else t
    if s.op == "reduce_sum" and tuple(s.attrs["axes"]) == (0,):
        return "sum", (s.inputs[0],)
    return None


def hoist_sums(rev, nc: int):
    """(the reverse body with hoistable accumulators taken out, what to sum after it)."""
    g: Graph = rev.graph
    carries = [n for n in g.inputs if n.attrs["kind"] == "carry"]
    steps = [n for n in g.inputs if n.attrs["kind"] == "x"]
    users = g.users()
    outs = list(g.outputs)
    n_acc, n_gx = len(rev.acc), len(rev.grads_x)
    kept_acc, dropped, hoisted, extra = [], set(), [], []

    def source(n: Node) -> tuple[str, int]:
        if n in steps:
            return ("x", steps.index(n))
        if n not in extra:
            extra.append(n)
        return ("y", extra.index(n))

    for j, k in enumerate(rev.acc):
        acc, out = carries[nc + j], outs[nc + j]
        found = _summand(out, acc) if users[acc] == [out] and users[out] == [] else None
        if found is None or any(o.dtype != out.dtype for o in found[1]):
            kept_acc.append(j)
            continue
        kind, operands = found
        hoisted.append(Hoisted(k, kind, tuple(source(o) for o in operands), out.shape))
        dropped.add(acc)
    if not hoisted:
        return rev, []
    from graphc.passes.dce import eliminate_dead_code

    new_outs = outs[:nc] + [outs[nc + j] for j in kept_acc] + outs[nc + n_acc :] + extra
    n_carry = nc + len(kept_acc)
    names = [f"carry{i}" for i in range(n_carry)]
    names += [f"y{i}" for i in range(n_gx + len(extra))]
    nodes = [n for n in g.nodes if n not in dropped]
    graph = eliminate_dead_code(Graph(nodes, new_outs, names, g.name))
    return replace(rev, graph=graph, acc=[rev.acc[j] for j in kept_acc]), hoisted


def summed(b, h: Hoisted, stacked: list[Node]) -> Node:
    """The gradient h describes, from its operands stacked over the steps."""
    if h.kind == "matmul":
        a, c = (b.reshape(s, shape=(s.shape[0] * s.shape[1], s.shape[2])) for s in stacked)
        return b.matmul(a, c, trans_a=True)
    (a,) = stacked
    total = b.reduce_sum(a, axes=(0, 1))
    return total if total.shape == h.shape else b.reshape(total, shape=h.shape)
