"""The VJP of `scan`: another scan, over the steps in reverse, of the body's own VJP.

The reverse body of a forward body F (carries c, per-step inputs x, consts k; new carries
c', per-step outputs y) takes
  - carries: the cotangent of each carry, and an accumulator for each float const's
    gradient (its contributions from every step summed in the loop);
  - per step: what the VJP reads of the forward step: the step's x, the carries' values
    at the step, values F computed (saved by the forward loop as extra per-step outputs),
    and the cotangents of the step's y;
  - consts: F's consts;
and returns the cotangents of the carries before the step, the accumulators plus this
step's contributions, and the gradient of each float x for the step.

Which values to save is decided once, from the VJP itself (`plan_saved`): every value of the
forward step that some VJP rule reads, except views and fills, which the reverse step
computes again from what it has (cheap, and saving a broadcast would store it T times).
The forward loop saves them when it is built (graphc.loops) if anything requires grad; a
loop built without them (rare: differentiated although nothing required grad when it was
traced) is run a second time, saving them, by its VJP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphc.ir import Body, Graph, GraphBuilder, Node
from graphc.ops.scan import segments, unpack
from graphc.ops.scan_hoist import hoist_sums, summed

RECOMPUTED = ("reshape", "broadcast_to", "transpose", "slice", "full", "constant", "arange")


@dataclass
class ReverseBody:
    graph: Graph
    sources: list[tuple[str, int]]  # per-step inputs: ("x", j), ("saved", s) or ("ct_y", j)
    consts: list[int]  # the forward consts it reads, by index
    acc: list[int]  # the forward consts whose gradient it accumulates
    grads_x: list[int]  # the forward xs whose gradient is a per-step output
    missing: bool = False  # reads a forward value the given saved list does not hold
    reads: list[Node] = field(default_factory=list)  # forward values its VJP part reads


def reverse_body(
    body: Graph, nc: int, nx: int, ny: int, saved: list[Node], seeded: list[int] | None = None
) -> ReverseBody:
    """`seeded`: the per-step outputs (indices into body.outputs, after the carries) whose
    cotangents the reverse loop reads (default: the ys); the others' are zero."""
    seeded = list(range(nc, nc + ny)) if seeded is None else seeded
    from graphc.passes.autodiff import backward_from
    from graphc.passes.dce import eliminate_dead_code

    ins = body.inputs
    carries, xs, consts = ins[:nc], ins[nc : nc + nx], ins[nc + nx :]
    b = GraphBuilder("body")
    ct_c = [b.add_input(f"c{i}", c.type, "carry") for i, c in enumerate(carries)]
    acc = [k for k, n in enumerate(consts) if n.dtype.is_floating_point]
    acc_in = [b.add_input(f"c{nc + j}", consts[k].type, "carry") for j, k in enumerate(acc)]
    env: dict[Node, Node] = {}
    source: dict[Node, tuple[str, int]] = {}

    def step_input(fwd: Node, name: str, src: tuple[str, int]) -> Node:
        node = b.add_input(name, fwd.type, "x")
        source[node] = src
        return node

    for j, x in enumerate(xs):
        env[x] = step_input(x, f"x{j}", ("x", j))
    hist: dict[Node, Node] = {}  # reverse-body input -> the carry whose step value it is
    for i, c in enumerate(carries):
        src = ("saved", saved.index(c)) if c in saved else ("unsaved", i)
        env[c] = step_input(c, f"h{i}", src)
        hist[env[c]] = c
    saved_in = {
        n: step_input(n, f"s{s}", ("saved", s)) for s, n in enumerate(saved) if not n.is_input
    }
    ct_y = [step_input(body.outputs[k], f"g{k - nc}", ("ct_y", k - nc)) for k in seeded]
    k_in = [b.add_input(f"k{k}", c.type, "const") for k, c in enumerate(consts)]
    env.update(zip(consts, k_in, strict=True))
    # The whole forward step is copied, so the sweep below sees every path from the inputs
    # to the outputs; the values the forward loop saved replace their copies afterwards.
    copies: dict[Node, Node] = {}  # reverse-body copy -> forward node
    for n in body.nodes:
        if n.is_input:
            continue
        env[n] = b.append(Node(n.op, [env[i] for i in n.inputs], n.attrs, n.type, n.loc))
        copies[env[n]] = n

    seeds: dict[Node, Node] = {}
    seeded_outputs = [body.outputs[k] for k in list(range(nc)) + seeded]
    for o, g in zip(seeded_outputs, ct_c + ct_y, strict=True):
        o = env[o]
        seeds[o] = b.add(seeds[o], g) if o in seeds else g
    float_xs = [j for j, x in enumerate(xs) if x.dtype.is_floating_point]
    wrts = [env[c] for c in carries] + [env[xs[j]] for j in float_xs] + [k_in[k] for k in acc]
    grads = backward_from(b, seeds, wrts)
    ct_prev, g_x, g_k = grads[:nc], grads[nc : nc + len(float_xs)], grads[nc + len(float_xs) :]
    outs = ct_prev + [b.add(a, g) for a, g in zip(acc_in, g_k, strict=True)] + g_x
    names = [f"carry{i}" for i in range(nc + len(acc))] + [f"y{j}" for j in range(len(g_x))]
    graph = _substitute(b.build(outs, names), {env[n]: i for n, i in saved_in.items()}, copies)
    graph = eliminate_dead_code(graph)

    # Which forward values the VJP part reads (views and fills are computed again).
    readers = [n for n in graph.nodes if not n.is_input and n not in copies]
    stack = [i for n in readers for i in n.inputs] + [o for o in graph.outputs]
    need: set[Node] = set()
    seen: set[Node] = set()
    while stack:
        r = stack.pop()
        if r in seen:
            continue
        seen.add(r)
        if r in copies:
            fwd = copies[r]
            if fwd.op in RECOMPUTED:
                stack.extend(r.inputs)
            else:
                need.add(fwd)
        elif r in hist:
            need.add(hist[r])
    order = {n: i for i, n in enumerate(body.nodes)}
    reads = sorted(need, key=order.get)

    # Drop the per-step inputs and consts nobody reads.
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.outputs)
    keep = [n for n in graph.nodes if not n.is_input or n.attrs["kind"] == "carry" or n in used]
    graph = Graph(keep, graph.outputs, graph.output_names, graph.name)
    steps = [n for n in graph.inputs if n.attrs["kind"] == "x"]
    kept_consts = [k for k, n in enumerate(k_in) if n in used]
    return ReverseBody(
        graph,
        [source[n] for n in steps],
        kept_consts,
        acc,
        float_xs,
        missing=any(source[n][0] == "unsaved" for n in steps) or any(n not in saved for n in reads),
        reads=reads,
    )


def plan_saved(body: Graph, nc: int, nx: int, ny: int) -> list[Node]:
    """The forward values the reverse loop reads: carries first, then computed values."""
    reads = reverse_body(body, nc, nx, ny, []).reads
    return [n for n in reads if n.is_input] + [n for n in reads if not n.is_input]


def with_saved(body: Graph, nc: int, ny: int, saved: list[Node]) -> Graph:
    """The body with `saved` as its extra per-step outputs (replacing any it had)."""
    outputs = list(body.outputs[: nc + ny]) + list(saved)
    names = list(body.output_names[: nc + ny]) + [f"saved{s}" for s in range(len(saved))]
    return Graph(body.nodes, outputs, names, body.name)


def scan_vjp(b, g, out, inputs, body, num_carry, num_xs, num_ys, length, reverse):
    nc, nx, ny = num_carry, num_xs, num_ys
    fwd = body.graph
    segs = segments(fwd, nc, length)

    def cotangent(k: int) -> Node | None:
        """The cotangent of body output k's part of the packed result; None if it is zero
        (a part nobody reads, as the saved values usually are)."""
        from graphc.passes.canonicalize import _slice_through

        s = segs[k]
        piece = _slice_through(b, g, 0, s.offset, s.offset + s.size, depth=8)
        if piece is not None and piece.op == "full" and piece.attrs["value"] == 0:
            return None
        if piece is None:
            piece = b.slice(g, axis=0, start=s.offset, stop=s.offset + s.size, step=1)
        return b.reshape(piece, shape=s.shape)

    outputs = {k: cotangent(k) for k in range(nc, len(fwd.outputs))}
    seeded = [k for k, c in outputs.items() if c is not None]
    saved = list(fwd.outputs[nc + ny :])
    rev = reverse_body(fwd, nc, nx, ny, saved, seeded)
    if rev.missing:  # run the forward loop again, saving what the reverse loop reads
        saved = plan_saved(fwd, nc, nx, ny)
        fwd = with_saved(fwd, nc, ny, saved)
        attrs = dict(num_carry=nc, num_xs=nx, num_ys=ny, length=length, reverse=reverse)
        out = b.scan(*inputs, body=Body(fwd), **attrs)
        seeded = [k for k in seeded if k < nc + ny]  # the first loop's saved values are gone
        rev = reverse_body(fwd, nc, nx, ny, saved, seeded)
    saved_values = unpack(b, out, range(nc + ny, nc + ny + len(saved)))
    rev, hoisted = hoist_sums(rev, nc)

    consts = inputs[nc + nx :]
    carries_in = []
    for i in range(nc):
        c = cotangent(i)
        carries_in.append(c if c is not None else b.full(0.0, fwd.outputs[i].shape, g.dtype))
    carries_in += [b.full(0.0, consts[k].shape, consts[k].dtype) for k in rev.acc]
    steps = []
    for kind, i in rev.sources:
        if kind == "x":
            steps.append(inputs[nc + i])
        elif kind == "saved":
            steps.append(saved_values[i])
        else:
            steps.append(outputs[nc + i])
    n_carry = len(carries_in)
    n_ys = len(rev.graph.outputs) - n_carry  # the xs' gradients, then the hoisted operands
    cts: list[Node | None] = [None] * len(inputs)
    if n_carry + n_ys == 0:
        return tuple(cts)
    node = b.scan(
        *carries_in,
        *steps,
        *[consts[k] for k in rev.consts],
        body=Body(rev.graph),
        num_carry=n_carry,
        num_xs=len(steps),
        num_ys=n_ys,
        length=length,
        reverse=not reverse,
    )
    results = unpack(b, node, range(n_carry + n_ys))
    for i in range(nc):
        cts[i] = results[i]
    for j, k in enumerate(rev.acc):
        cts[nc + nx + k] = results[nc + j]
    for j, i in enumerate(rev.grads_x):
        cts[nc + i] = results[n_carry + j]
    extra = results[n_carry + len(rev.grads_x) :]
    for h in hoisted:
        stacked = [steps[i] if kind == "x" else extra[i] for kind, i in h.operands]
        cts[nc + nx + h.const] = summed(b, h, stacked)
    return tuple(cts)


def _substitute(graph: Graph, subst: dict[Node, Node], copies: dict[Node, Node]) -> Graph:
    """graph with each node in `subst` replaced by its value (keeping `copies` current)."""
    env: dict[Node, Node] = {}
    nodes = []
    for n in graph.nodes:
        if n in subst:
            env[n] = subst[n]
            continue
        ins = tuple(env.get(i, i) for i in n.inputs)
        new = n.with_inputs(ins)
        if n in copies and new is not n:
            copies[new] = copies[n]
        env[n] = new
        nodes.append(new)
    outputs = [env.get(o, o) for o in graph.outputs]
    return Graph(nodes, outputs, graph.output_names, graph.name)
