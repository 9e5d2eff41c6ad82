"""schedule_collectives: places all-reduces so communication overlaps computation.

A traced step has all of DistributedDataParallel's `all_reduce_start`/`all_reduce_wait`
pairs after the whole backward pass (backward() expands there). This pass
- numbers the requests: every start gets its own `bucket` (0, 1, ... in graph order), and
  its wait the same, so native code can keep each request in its own slot;
- reorders the graph (a stable topological sort keyed by the old positions) so that each
  start runs right after the last of its inputs is computed — as soon as its bucket's
  gradients exist, while the backward pass goes on — and each wait runs right before the
  first node that reads its result other than through a view (the update of the bucket's
  first parameter); graph inputs keep their relative order (the calling convention);
- stamps `graph_hash` (the structural hash of the graph so placed) on every start, which the
  ranks compare at the first all-reduce of a new step (graphc/distributed/comm.py).
Graphs without collectives are returned unchanged.
"""

from __future__ import annotations

import heapq

from graphc.ir import Graph, GraphBuilder, Node
from graphc.passes.rewrite import rewrite
from graphc.passes.views import VIEW_OPS

START, WAIT = "all_reduce_start", "all_reduce_wait"


def schedule_collectives(graph: Graph) -> Graph:
    if not any(n.op == START for n in graph.nodes):
        return graph
    graph = _renumber(graph)
    graph = _reorder(graph)
    digest = graph.structural_hash()
    stamp = int(digest[:15], 16) or 1  # 60 bits: positive as an i64, never "no hash"
    return rewrite(graph, lambda b, n, ins: _with(b, n, ins, graph_hash=stamp))


def _with(b: GraphBuilder, node: Node, ins: tuple[Node, ...], **attrs) -> Node | None:
    if node.op != START:
        return None
    return b.emit(START, ins, {**node.attrs, **attrs})


def _renumber(graph: Graph) -> Graph:
    slots: dict[Node, int] = {}

    def rule(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
        if node.op == START:
            # (a stamp from an earlier run would make the hash depend on it)
            new = b.emit(START, ins, {**node.attrs, "bucket": len(slots), "graph_hash": 0})
            slots[new] = new.attrs["bucket"]
            return new
        if node.op == WAIT:
            return b.emit(WAIT, ins, {**node.attrs, "bucket": slots.get(ins[1], 0)})
        return None

    return rewrite(graph, rule)


def _reorder(graph: Graph) -> Graph:
    nodes = graph.nodes
    pos = {n: i for i, n in enumerate(nodes)}
    users = graph.users()
    key: dict[Node, tuple[float, int]] = {}
    for n in nodes:
        if n.is_input:
            key[n] = (-1.0, pos[n])
        elif n.op == START:
            key[n] = (max(key[i][0] for i in n.inputs) + 0.25, pos[n])
        elif n.op == WAIT:
            key[n] = (_first_use(n, users, pos, len(nodes)) - 0.5, pos[n])
        else:
            key[n] = (float(pos[n]), pos[n])
    waiting = {n: len(set(n.inputs)) for n in nodes}
    ready = [(key[n], pos[n]) for n in nodes if waiting[n] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        _, i = heapq.heappop(ready)
        n = nodes[i]
        order.append(n)
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (key[u], pos[u]))
    return graph.replace(nodes=order)


def _first_use(wait: Node, users: dict[Node, list[Node]], pos: dict[Node, int], end: int) -> int:
    """Position of the first node that reads `wait`'s value other than through views."""
    first = end
    stack = list(users[wait])
    while stack:
        u = stack.pop()
        if u.op in VIEW_OPS:
            stack.extend(users[u])
        else:
            first = min(first, pos[u])
    return first
