"""fuse: groups the nodes of a graph into kernels and records why (meta["schedule"]).

Rules, applied walking the graph backwards from its outputs:
- epilogue: conv2d / matmul absorbs a following per-channel bias add and ReLU (the
  intermediate values have no other reader), so the output is written once;
- loop: an elementwise op or a reduction starts a loop kernel over its iteration domain and
  pulls in every elementwise producer of the same shape whose value nobody else needs (or
  only the graph's outputs need — it is then stored as an extra output of the same pass);
- views and fills are read in place by loop kernels; a view that a non-loop kernel or the
  caller needs is materialised by a copy loop (reshape of a stored value is just an alias),
  and so is the view under a reshape that index arithmetic cannot follow (a reshape of a
  transpose or broadcast);
- everything else is a kernel of its own.
"""

from __future__ import annotations

from graphc.ir import Graph, Node
from graphc.ops import OPS
from graphc.ops.nn import windows_tile
from graphc.passes.scan import reads_in_place, result_part
from graphc.passes.schedule import INLINE_OPS, Kernel, Schedule
from graphc.passes.views import VIEW_OPS, affine_view, alias_of


def is_elementwise(n: Node) -> bool:
    return not n.is_input and "elementwise" in OPS[n.op].traits


def is_reduction_loop(n: Node) -> bool:
    return n.op in ("reduce_sum", "reduce_max")


def fuse(graph: Graph) -> Graph:
    return graph.with_meta(schedule=_Fuser(graph).run())


class _Fuser:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.users = graph.users()
        self.outputs = set(graph.outputs)
        self.owner: dict[Node, Kernel] = {}
        self.kernels: list[Kernel] = []
        self.decisions: list[str] = []

    def run(self) -> Schedule:
        self.order = {n: i for i, n in enumerate(self.graph.nodes)}
        self.reductions: dict[tuple, list[Node]] = {}  # sibling candidates, by what they reduce
        for n in self.graph.nodes:
            if is_reduction_loop(n):
                self.reductions.setdefault(_reduction_key(n), []).append(n)
        for node in self.graph.nodes:  # epilogues first: they claim their bias add and ReLU
            if node.op in ("conv2d", "matmul"):
                self._contraction(node)
            elif node.op == "max_pool2d_grad":
                self._pool_grad(node)
        for node in reversed(self.graph.nodes):
            if node.is_input or node in self.owner:
                continue
            if node.op in VIEW_OPS or node.op in INLINE_OPS:
                continue  # read in place by their consumers; materialised below if needed
            if is_elementwise(node) or is_reduction_loop(node):
                self._loop(node)
            elif node.op in ("softmax", "log_softmax"):
                self._softmax(node)
            else:
                self._add(Kernel("", node.op, node, (node,), (node,), "its own kernel"))
        self._materialise_views()
        order = {n: i for i, n in enumerate(self.graph.nodes)}
        kernels = sorted(self.kernels, key=lambda k: order[k.root])
        named = tuple(
            Kernel(f"k{i}_{k.kind}", k.kind, k.root, k.nodes, k.outputs, k.reason, k.params)
            for i, k in enumerate(kernels)
        )
        return Schedule(named, tuple(self.decisions))

    def _add(self, k: Kernel) -> None:
        self.kernels.append(k)
        for n in k.nodes:
            if n.op not in VIEW_OPS and n.op not in INLINE_OPS:
                self.owner[n] = k

    def _at(self, n: Node) -> int:
        """Where n is computed: its kernel's position (a loop of sibling reductions runs at
        its first sum, before some of its members' places in the graph), else its own."""
        k = self.owner.get(n)
        return self.order[k.root] if k is not None else self.order[n]

    def _only_user(self, n: Node) -> Node | None:
        us = self.users[n]
        return us[0] if len(us) == 1 and n not in self.outputs else None

    # ---- conv2d / matmul with bias and ReLU --------------------------------------------------

    def _contraction(self, node: Node) -> None:
        members, out, bias, relu = [node], node, None, False
        nxt = self._only_user(out)
        if nxt is not None and nxt.op == "add" and nxt not in self.owner:
            other = nxt.inputs[1] if nxt.inputs[0] is node else nxt.inputs[0]
            bias = _bias_vector(other, node)
            if bias is not None and not bias.is_input and self.order[bias] > self.order[node]:
                # the epilogue reads the bias where the contraction runs: it must exist by then
                bias = None
                self.decisions.append(f"not fused add into {node.op}: its bias comes later")
            elif bias is not None:
                members += _view_chain(other, bias) + [nxt]
                out = nxt
                nxt = self._only_user(out)
                self.decisions.append(f"fused bias add into {node.op}: per-channel epilogue")
            else:
                self.decisions.append(f"not fused add into {node.op}: not a per-channel bias")
        if nxt is not None and nxt.op == "relu" and nxt not in self.owner:
            members.append(nxt)
            out, relu = nxt, True
            self.decisions.append(f"fused relu into {node.op}: epilogue")
        reason = "epilogue: " + "+".join(
            [node.op] + (["bias"] if bias is not None else []) + (["relu"] if relu else [])
        )
        self._add(
            Kernel("", node.op, node, tuple(members), (out,), reason, {"bias": bias, "relu": relu})
        )

    # ---- max pooling's gradient with the ReLU gradient and the bias gradient --------------------

    def _pool_grad(self, node: Node) -> None:
        members, out, relu, bias = [node], node, False, None
        x = node.inputs[1]
        mask = self._relu_mask(node, x) if windows_tile(node) else None
        if mask is not None:
            gt, where = mask
            members += [gt, where]
            out, relu = where, True
            self.decisions.append(
                "fused relu gradient into max_pool2d_grad: the mask is the "
                "pooled input > 0 at each window's maximum"
            )
            sums = [
                u
                for u in self.users[where]
                if u.op == "reduce_sum"
                and tuple(u.attrs["axes"]) == (0, 2, 3)
                and u not in self.owner
            ]
            if sums:
                bias = sums[0]
                members.append(bias)
                self.decisions.append(
                    "fused bias-gradient sum into max_pool2d_grad: one pass "
                    "writes the gradient and sums it per channel"
                )
        elif node.op == "max_pool2d_grad" and not windows_tile(node):
            self.decisions.append(
                "not fused relu gradient into max_pool2d_grad: windows overlap or are padded"
            )
        outputs = (out,) + ((bias,) if bias is not None else ())
        reason = (
            "max_pool2d_grad"
            + (" + relu mask" if relu else "")
            + (" + bias grad" if bias is not None else "")
        )
        self._add(
            Kernel(
                "",
                "max_pool2d_grad",
                node,
                tuple(members),
                outputs,
                reason,
                {
                    "relu": relu,
                    "bias_grad": bias,
                    # the mask's zeros are constants of the emitted code, never read from memory
                    "constants": (mask[0].inputs[1], mask[1].inputs[2]) if relu else (),
                },
            )
        )

    def _relu_mask(self, node: Node, x: Node):
        """(gt, where) if node's only reader is where(gt(x, 0), node, 0)."""
        where = self._only_user(node)
        if where is None or where.op != "where" or where.inputs[1] is not node:
            return None
        gt, zero = where.inputs[0], where.inputs[2]
        if not (
            _is_zero(zero)
            and gt.op == "gt"
            and gt.inputs[0] is x
            and _is_zero(gt.inputs[1])
            and self.users[gt] == [where]
            and gt not in self.outputs  # the fused kernel never stores the mask
        ):
            return None
        if where in self.owner or gt in self.owner:
            return None
        return gt, where

    # ---- softmax with its scaling and masking ---------------------------------------------

    def _softmax(self, node: Node) -> None:
        """A softmax over the last axis evaluates its elementwise producers of its own shape
        as it reads each row (scores * scale + mask: attention), when nothing else reads
        them: they are never stored."""
        members: set[Node] = set()
        if node.attrs["axis"] == node.type.rank - 1:
            members = self._candidates(node, node.shape) - self.outputs
            changed = True
            while changed:  # producers read by anything else are computed on their own
                keep = members | {node}
                drop = {m for m in members if any(u not in keep for u in self.users[m])}
                members -= drop
                members &= _reachable(node, members)
                changed = bool(drop)
        if not members:
            self._add(Kernel("", node.op, node, (node,), (node,), "its own kernel"))
            return
        inline = {i for m in members | {node} for i in _inline_leaves(m)}
        nodes = tuple(sorted(members | inline | {node}, key=self.order.get))
        ops = [n.op for n in nodes if n in members]
        self.decisions.append(f"fused {' -> '.join(ops)} into {node.op}: computed per row")
        reason = f"{node.op} with {' -> '.join(ops)} fused in"
        self._add(Kernel("", node.op, node, nodes, (node,), reason, {"prologue": True}))

    # ---- loop kernels ---------------------------------------------------------------------

    def _loop(self, sink: Node) -> None:
        domain = sink.inputs[0].shape if is_reduction_loop(sink) else sink.shape
        sinks = [sink] + self._siblings(sink)
        members = self._members(sinks, domain)
        if members is None:  # the siblings' values are not all ready where the loop would run
            self.decisions.append(f"not fused sibling reductions into the loop of {sink.op}")
            sinks = [sink]
            members = self._members(sinks, domain)
        root = min(sinks, key=self.order.get)  # where the kernel runs: its first sum
        order = self.order
        inline = {i for m in members for i in _inline_leaves(m)}
        nodes = tuple(sorted(members | inline, key=order.get))
        ops = [n.op for n in nodes if n in members]
        if len(ops) > 1:
            self.decisions.append(f"fused {' -> '.join(ops)} into one loop over {list(domain)}")
        extra = [
            m
            for m in members
            if m not in sinks
            and (m in self.outputs or any(u not in members for u in self.users[m]))
        ]
        outputs = tuple(sorted({*sinks, *extra}, key=order.get))
        what = str(list(domain))
        if is_reduction_loop(sink):
            what = f"{' + '.join(s.op for s in sorted(sinks, key=order.get))} over {what}"
        self._add(Kernel("", "loop", root, nodes, outputs, f"loop over {what}", {"domain": domain}))

    def _members(self, sinks: list[Node], domain: tuple[int, ...]) -> set[Node] | None:
        """The nodes of a loop computing `sinks`, run where the first of them is; None if
        some value it reads is computed only after that."""
        candidates = set().union(*(self._candidates(s, domain) for s in sinks))
        # Keep a producer only if every reader of its value is in the loop too (a graph
        # output is read after the whole step, so it can be stored from inside the loop).
        # A producer whose value is also read outside the loop stays in it when every such
        # reader runs after the loop (its value is then stored by the same pass);
        # otherwise it must be computed earlier, on its own.
        members = set(sinks) | candidates
        last = min(self.order[s] for s in sinks)
        changed = True
        while changed:
            changed = False
            for c in list(members - set(sinks)):
                early = [u for u in self.users[c] if u not in members and self._at(u) < last]
                if early:
                    members.discard(c)
                    changed = True
                    self.decisions.append(
                        f"not fused {c.op} into the loop of {sinks[0].op}: {early[0].op} reads "
                        "it before the loop would run"
                    )
            members &= set().union(*(_reachable(s, members) for s in sinks))
        if len(sinks) > 1:
            for m in members:
                for r in _chain_reads_of(m, members):
                    if self.order[r] >= last:
                        return None
        return members

    def _siblings(self, sink: Node) -> list[Node]:
        """Reductions computed earlier over the same values and axes, to be computed in the
        same pass as `sink` (one read of the data for several sums, as BatchNorm's gradient
        needs); the loop then runs where the first of them is, so `sink` must not depend on
        them (what it reads must be ready by then: _members checks)."""
        if not is_reduction_loop(sink):
            return []
        found = []
        earlier = [
            r
            for r in self.reductions.get(_reduction_key(sink), ())
            if self.order[r] < self.order[sink]
        ]
        # the nearest few only: siblings are computed side by side (a deep network has a
        # hundred reductions of one shape, and comparing each with all would be quadratic)
        for r in reversed(earlier[-SIBLING_WINDOW:]):
            if len(found) == MAX_SIBLINGS:
                break
            if r in self.owner:
                continue
            if not self._shares_data(sink, r) or self._depends_on(sink, r):
                continue
            found.append(r)
            self.decisions.append(
                f"fused {r.op} into the loop of {sink.op}: same values and axes, one pass"
            )
        return found

    def _shares_data(self, a: Node, b: Node) -> bool:
        """Whether the elementwise chains of two reductions read a common value."""
        return bool(_chain_reads(a, self.owner) & _chain_reads(b, self.owner))

    def _depends_on(self, later: Node, earlier: Node) -> bool:
        """Whether `later` reads `earlier`'s value through any path (nodes before `earlier`
        in graph order cannot lead to it, which bounds the walk)."""
        floor = self.order[earlier]
        seen: set[Node] = set()
        stack = list(later.inputs)
        while stack:
            n = stack.pop()
            if n is earlier:
                return True
            if n in seen or self.order[n] < floor:
                continue
            seen.add(n)
            stack.extend(n.inputs)
        return False

    def _candidates(self, sink: Node, domain: tuple[int, ...]) -> set[Node]:
        """Unowned elementwise producers of the loop's shape, reached through direct edges."""
        found: set[Node] = set()
        stack = list(sink.inputs)
        while stack:
            p = stack.pop()
            if p in found or p.is_input or p in self.owner or not is_elementwise(p):
                continue
            if p.shape != domain:
                self.decisions.append(
                    f"not fused {p.op} into the loop of {sink.op}: shape {list(p.shape)} "
                    f"differs from the loop's {list(domain)}"
                )
                continue
            found.add(p)
            stack.extend(p.inputs)
        return found

    # ---- views the caller or a non-loop kernel needs as buffers ---------------------------------

    def _materialise_views(self) -> None:
        stored = set(self.graph.inputs) | {o for k in self.kernels for o in k.outputs}
        needs: list[Node] = []
        for k in list(self.kernels):
            if k.kind == "loop" or k.params.get("prologue"):
                continue
            for r in k.reads():
                if (r.op in VIEW_OPS or r.op in INLINE_OPS) and r not in needs:
                    if k.kind == "scan" and reads_in_place(k.root, r, stored):
                        continue  # a loop reads each step's block where it lives
                    if result_part(r, stored) is not None:
                        continue  # a part of a loop's result is read where it lies
                    needs.append(r)
        for o in self.graph.outputs:
            if (o.op in VIEW_OPS or o.op in INLINE_OPS) and o not in needs:
                needs.append(o)
        for v in needs:
            self._make_affine(v, stored)
            if v.op == "reshape" and alias_of(v, stored) is not None:
                continue  # same buffer, no copy
            self._materialise(v, stored, f"materialise {v.op} for its reader", "a non-loop kernel")
        for k in list(self.kernels):
            if k.kind != "loop" and not k.params.get("prologue"):
                continue
            for n in k.nodes:
                if n.op not in VIEW_OPS and n.op not in INLINE_OPS:
                    for i in n.inputs:
                        if i.op in VIEW_OPS:
                            self._make_affine(i, stored)

    def _make_affine(self, view: Node, stored: set[Node]) -> None:
        """Loop kernels read a view as index arithmetic over a stored buffer. A reshape of a
        non-contiguous view (reshape(transpose(x)), reshape(broadcast_to(x))) has no such
        form: the view under it is materialised, bottom-up, until the whole chain has."""
        chain = []
        while view not in stored and view.op in VIEW_OPS:
            chain.append(view)
            view = view.inputs[0]
        if view not in stored:
            return  # a view of a fill: every element is the fill's value
        for v in reversed(chain):
            if affine_view(v, stored) is None:
                src = v.inputs[0]
                self._materialise(src, stored, f"materialise {src.op} under a reshape", "reshape")

    def _materialise(self, v: Node, stored: set[Node], reason: str, reader: str) -> None:
        nodes = tuple([v] + [i for i in _inline_leaves(v)])
        self._add(Kernel("", "loop", v, nodes, (v,), reason, {"domain": v.shape}))
        stored.add(v)
        self.decisions.append(f"materialised {v.op} {list(v.shape)}: read by {reader}")


MAX_SIBLINGS = 3  # reductions merged into one loop besides its sink (accumulators per pass)
SIBLING_WINDOW = 4  # earlier reductions of the same kind considered, nearest first


def _reduction_key(n: Node) -> tuple:
    return (n.op, n.inputs[0].shape, tuple(n.attrs["axes"]), n.attrs["keepdims"], n.dtype)


def _chain_reads(sink: Node, owner, limit: int = 48) -> set[Node]:
    """The values a reduction's unowned elementwise chain reads from elsewhere (stored or
    computed by other kernels), through views: the nearest `limit` nodes of it, which is
    where siblings share their data (the question is only whether merging pays)."""
    reads: set[Node] = set()
    seen: set[Node] = set()
    stack = list(sink.inputs)
    while stack and len(seen) < limit:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op in VIEW_OPS or n.op in INLINE_OPS:
            stack.extend(n.inputs)
        elif not n.is_input and n not in owner and is_elementwise(n):
            stack.extend(n.inputs)
        else:
            reads.add(n)
    return reads


def _chain_reads_of(m: Node, members: set[Node]) -> list[Node]:
    """What member `m` reads from outside the loop: its inputs that are not members, seen
    through views (a view of a fill reads nothing)."""
    out = []
    stack = list(m.inputs)
    while stack:
        n = stack.pop()
        if n in members:
            continue
        if n.op in VIEW_OPS:
            stack.extend(n.inputs)
        elif n.op not in INLINE_OPS:
            out.append(n)
    return out


def _is_zero(n: Node) -> bool:
    return n.op == "full" and n.attrs["value"] == 0


def _reachable(sink: Node, members: set[Node]) -> set[Node]:
    seen = {sink}
    stack = [sink]
    while stack:
        for i in stack.pop().inputs:
            if i in members and i not in seen:
                seen.add(i)
                stack.append(i)
    return seen


def _inline_leaves(n: Node) -> list[Node]:
    """The view and fill nodes a member reads through (they are inlined as index math)."""
    out = []
    stack = list(n.inputs) if n.op not in VIEW_OPS else [n]
    while stack:
        x = stack.pop()
        if x.op in VIEW_OPS or x.op in INLINE_OPS:
            if x not in out:
                out.append(x)
            stack.extend(x.inputs)
    return [x for x in out if x is not n]


def _view_chain(node: Node, base: Node) -> list[Node]:
    chain = []
    while node is not base:
        chain.append(node)
        node = node.inputs[0]
    return chain


def _bias_vector(other: Node, out: Node) -> Node | None:
    """The 1-D bias vector if `other` broadcasts it along out's channel axis."""
    axis = 1 if out.op == "conv2d" else out.type.rank - 1
    channels = out.shape[axis]
    node = other
    while node.op in ("broadcast_to", "reshape"):
        node = node.inputs[0]
    if node.type.rank != 1 or node.shape[0] != channels or node.op in VIEW_OPS:
        return None
    # Check that the chain places the vector on `axis`: reshape to [1, C, 1, 1] (conv) or
    # [1, C] / [C] (matmul), then broadcast.
    chain = _view_chain(other, node)
    reshaped = [n for n in chain if n.op == "reshape"]
    if reshaped:
        shape = reshaped[-1].shape
        if shape.count(channels) < 1 or shape[axis - (len(out.shape) - len(shape))] != channels:
            return None
    return node
