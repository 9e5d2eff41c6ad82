"""Random valid graphs for differential fuzzing (tests/test_fuzz_native.py).

`GraphGen(draw).build()` grows a graph step by step from a pool of values: each step picks an
op kind (elementwise chains, comparisons, casts, views, reductions, rows, pooling, concat,
one_hot, matmul/conv with bias and ReLU epilogues, optimizer-like state updates), takes its
operands from the pool (so values fan out) or from fresh inputs, and adapts them with explicit
broadcast_to / reshape / transpose / slice / cast as the IR requires. Every choice is drawn
from hypothesis, so a failing graph shrinks to a small one; input *values* come from a numpy
generator seeded by a drawn seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import Graph, GraphBuilder, Node, TensorType

F32, F64, I64, I32, BOOL = dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32, dtypes.bool_
FLOATS = (F32, F64)
DIMS = (1, 2, 3, 5, 4, 7, 8, 13, 16, 17)  # odd sizes and size 1 first: they shrink there
MAX_NUMEL = 1536
SPECIAL = (np.nan, np.inf, -np.inf, 0.0, -0.0)

# op kind -> weight in mixed graphs
KINDS = {
    "unary": 6,
    "binary": 8,
    "compare": 2,
    "logic": 1,
    "where": 2,
    "cast": 2,
    "view": 4,
    "reduce": 3,
    "normalize": 1,
    "argmax": 1,
    "softmax": 1,
    "pool": 2,
    "pool_grad": 1,
    "concat": 1,
    "pad_slice": 1,
    "one_hot": 1,
    "matmul": 2,
    "conv": 2,
    "conv_grad": 1,
    "update": 2,
    "rng": 1,
}
GLUE = ("unary", "binary", "view", "cast", "where")  # filler steps of a focused graph


@dataclass(frozen=True)
class Fill:
    """How to make an input's values: normal, ties (small integers), special (with NaN, inf,
    signed zeros), int (low..high), bool, labels (classes 0..high-1 and `ignore`)."""

    kind: str
    low: int = 0
    high: int = 0
    ignore: int | None = None

    def make(self, rng: np.random.Generator, t: TensorType) -> np.ndarray:
        shape, np_type = t.shape, t.dtype.np
        if self.kind == "bool":
            return np.asarray(rng.random(shape) < 0.5)
        if self.kind in ("int", "labels"):
            v = rng.integers(self.low, self.high + 1, shape)
            if self.ignore is not None:
                v = np.where(rng.random(shape) < 0.2, self.ignore, v)
            return np.asarray(v).astype(np_type)
        if self.kind == "ties":
            return rng.integers(-3, 4, shape).astype(np_type)
        v = rng.standard_normal(shape)
        if self.kind == "special":
            hit = rng.random(shape) < 0.15
            v = np.where(hit, rng.choice(np.array(SPECIAL), shape), v)
        return np.asarray(v).astype(np_type)


@dataclass
class Case:
    graph: Graph
    fills: list[Fill]  # one per graph input, in order
    updates: dict[str, str] = field(default_factory=dict)  # output name -> input it replaces

    def arrays(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [f.make(rng, n.type) for f, n in zip(self.fills, self.graph.inputs, strict=True)]


def numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


class GraphGen:
    """Builds one random graph; `focus` makes every graph start with (and favour) one kind."""

    def __init__(
        self,
        draw: Callable,
        focus: str | None = None,
        max_steps: int = 10,
        kinds: dict[str, int] | None = None,
        repeats: int = 0,
    ) -> None:
        """`repeats`: how many times, at most, a block of the steps is built again over
        other operands of the same types (the repeated blocks of deep models, whose
        kernels share code)."""
        self.draw = draw
        self.focus = focus
        self.max_steps = max_steps
        self.repeats = repeats
        self.kinds = kinds or KINDS
        self.b = GraphBuilder("fuzz")
        self.pool: list[Node] = []
        self.fills: dict[Node, Fill] = {}
        self.updates: list[tuple[Node, Node]] = []  # (new value, input it replaces)

    # ---- drawing ----------------------------------------------------------------------------

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, seq: Sequence):
        return self.draw(st.sampled_from(list(seq)))

    def coin(self, p: float) -> bool:
        """True with probability p; shrinks to False."""
        return self.draw(st.integers(0, 99)) >= 100 - round(100 * p)

    def weighted(self, table: Sequence[tuple[str, int]]) -> str:
        k = self.int(0, sum(w for _, w in table) - 1)
        for name, w in table:
            if k < w:
                return name
            k -= w
        raise AssertionError("unreachable")

    def shape(self, rank: int | None = None, cap: int = MAX_NUMEL) -> tuple[int, ...]:
        if rank is None:
            rank = self.weighted([("2", 4), ("1", 3), ("3", 3), ("0", 1), ("4", 2)])
            rank = int(rank)
        dims: list[int] = []
        for _ in range(rank):
            d = self.choice(DIMS)
            dims.append(d if numel(dims) * d <= cap else 1)
        return tuple(dims)

    def dtype(self) -> dtypes.DType:
        return {"f32": F32, "f64": F64, "i64": I64, "bool": BOOL, "i32": I32}[
            self.weighted([("f32", 10), ("f64", 2), ("i64", 2), ("bool", 2), ("i32", 1)])
        ]

    # ---- values -----------------------------------------------------------------------------

    def new_input(self, shape, dtype, fill: Fill | None = None, kind: str = "input") -> Node:
        if fill is None:
            if dtype.is_floating_point:
                fill = Fill(self.weighted([("normal", 8), ("special", 2), ("ties", 2)]))
            elif dtype == BOOL:
                fill = Fill("bool")
            else:
                fill = Fill("int", *self.choice([(-4, 4), (-100, 100), (0, 3)]))
        n = self.b.add_input(f"x{len(self.fills)}", TensorType(tuple(shape), dtype), kind)
        self.fills[n] = fill
        self.pool.append(n)
        return n

    def add(self, n: Node) -> Node:
        if n not in self.pool:
            self.pool.append(n)
        return n

    def emit(self, op: str, inputs: Sequence[Node], **attrs) -> Node:
        return self.add(self.b.emit(op, list(inputs), attrs))

    def try_emit(self, op: str, inputs: Sequence[Node], **attrs) -> Node | None:
        try:
            return self.emit(op, inputs, **attrs)
        except ShapeError:
            return None

    def pick(self, pred: Callable[[Node], bool], empty: bool = False) -> Node | None:
        """A pool value satisfying pred; empty values (a zero dimension) only if allowed."""
        found = [n for n in self.pool if pred(n) and (empty or n.type.numel)]
        if not found:
            return None
        if self.coin(0.5):
            return found[self.int(0, len(found) - 1)]
        return found[-1]

    def value(
        self, pred: Callable[[Node], bool], make: Callable[[], Node], empty: bool = False
    ) -> Node:
        """A pool value satisfying pred (most of the time), else a fresh one."""
        n = self.pick(pred, empty) if not self.coin(0.25) else None
        return n if n is not None else make()

    def floating(self, rank_min: int = 0) -> Node:
        return self.value(
            lambda n: n.dtype.is_floating_point and n.type.rank >= rank_min,
            lambda: self.new_input(
                self.shape(rank=self.int(max(rank_min, 1), 4) if rank_min else None),
                self.choice([F32, F32, F32, F64]),
            ),
        )

    def any_value(self, rank_min: int = 0, empty: bool = False) -> Node:
        def make():
            rank = self.int(max(rank_min, 0), 4)
            return self.new_input(self.shape(rank=rank), self.dtype())

        return self.value(lambda n: n.type.rank >= rank_min, make, empty)

    def cast_to(self, x: Node, dtype) -> Node:
        return x if x.dtype == dtype else self.emit("cast", [x], dtype=dtype)

    def like(self, x: Node) -> Node:
        """A value of x's type, reached in one of the ways a real graph would."""
        shape, rank = x.shape, x.type.rank
        how = self.weighted(
            [
                ("input", 3),
                ("pool", 3),
                ("self", 1),
                ("full", 2),
                ("broadcast", 3),
                ("transposed", 2 if rank >= 2 else 0),
                ("sliced", 2 if rank >= 1 else 0),
                ("reduced", 2 if rank >= 1 and x.dtype != BOOL and x.type.numel else 0),
                ("literal", 1 if numel(shape) <= 64 else 0),
            ]
        )
        if how == "pool":
            y = self.pick(lambda n: n.shape == shape and n is not x, empty=True)
            if y is not None:
                return self.cast_to(y, x.dtype)
        if how == "self":
            return x
        if how == "full":
            return self.full(shape, x.dtype)
        if how == "broadcast":
            lead = self.int(0, rank)
            src = tuple(1 if self.coin(0.5) else d for d in shape[lead:])
            y = self.value(lambda n: n.shape == src, lambda: self.new_input(src, x.dtype))
            return self.cast_to(self.emit("broadcast_to", [y], shape=shape), x.dtype)
        if how == "transposed":
            perm = tuple(self.draw(st.permutations(range(rank))))
            src = [0] * rank
            for i, p in enumerate(perm):
                src[p] = shape[i]
            y = self.value(lambda n: n.shape == tuple(src), lambda: self.new_input(src, x.dtype))
            return self.cast_to(self.emit("transpose", [y], perm=perm), x.dtype)
        if how == "sliced":
            axis = self.int(0, rank - 1)
            start, step, extra = self.int(0, 2), self.int(1, 3), self.int(0, 2)
            n = shape[axis]
            stop = start + step * (n - 1) + 1 if n else start
            src = list(shape)
            src[axis] = stop + extra
            y = self.new_input(src, x.dtype)
            return self.emit("slice", [y], axis=axis, start=start, stop=stop, step=step)
        if how == "reduced":
            axes = self.axes(rank)
            op = self.choice(["reduce_sum", "reduce_max"])
            r = self.emit(op, [x], axes=axes, keepdims=True)
            return self.emit("broadcast_to", [r], shape=shape)
        if how == "literal":
            rng = np.random.default_rng(self.int(0, 1000))
            values = Fill("int", -3, 3).make(rng, x.type) if x.dtype != BOOL else None
            values = rng.random(shape) < 0.5 if values is None else values
            return self.emit("constant", [], value=np.asarray(values).astype(x.dtype.np))
        return self.new_input(shape, x.dtype)

    def full(self, shape, dtype) -> Node:
        if dtype.is_floating_point:
            v = self.choice([1.0, 0.0, -1.0, 0.5, 2.0, 3.0, -0.0, float("nan"), float("inf")])
        elif dtype == BOOL:
            v = self.choice([True, False])
        else:
            v = self.choice([1, 0, -1, 2, 7])
        return self.emit("full", [], value=v, shape=tuple(shape), dtype=dtype)

    def axes(self, rank: int) -> tuple[int, ...]:
        return tuple(a for a in range(rank) if self.coin(0.5))

    def positive(self, x: Node) -> Node:
        """|x| + 1: a value safely away from zero (a denominator, a log argument)."""
        one = self.emit("full", [], value=1.0, shape=x.shape, dtype=x.dtype)
        return self.emit("add", [self.emit("abs", [x]), one])

    def bool_like(self, x: Node) -> Node:
        how = self.weighted([("pool", 2), ("compare", 3), ("input", 1)])
        if how == "pool":
            c = self.pick(lambda n: n.dtype == BOOL and n.shape == x.shape, empty=True)
            if c is not None:
                return c
        if how == "compare":
            y = self.pick(lambda n: n.shape == x.shape and n.dtype == x.dtype, empty=True) or x
            return self.emit(self.choice(["gt", "lt", "ge", "le", "eq", "ne"]), [y, self.like(y)])
        return self.new_input(x.shape, BOOL)

    # ---- steps ------------------------------------------------------------------------------

    def build(self) -> Case:
        steps = self.int(1, self.max_steps)
        kinds = [(k, w) for k, w in self.kinds.items() if w]
        glue = [(k, KINDS[k]) for k in GLUE]
        last = None
        marks = []  # where each step's nodes start
        for i in range(steps):
            marks.append(len(self.b.nodes))
            if self.focus is not None:
                kind = self.focus if i == 0 or self.coin(0.3) else self.weighted(glue)
            else:
                kind = self.weighted(kinds)
            last = getattr(self, "step_" + kind)() or last
        if last is None:
            last = self.step_unary()
        if self.repeats:
            start = marks[self.int(0, len(marks) - 1)]
            for _ in range(self.int(1, self.repeats)):
                last = self.repeat(start) or last
        return self.finish(last)

    def repeat(self, start: int) -> Node | None:
        """The nodes built since position `start`, emitted again: each input of the block
        a fresh one of the same type and fill (or, sometimes, the same one), each value from
        before the block read again as it is, each state update of the block repeated for
        the new state."""
        block = self.b.nodes[start:]
        targets = {old for _, old in self.updates}
        env: dict[Node, Node] = {}

        def operand(i: Node) -> Node:
            if i in env:
                return env[i]
            if i.is_input and (i in targets or self.coin(0.5)):
                # an input from before the block: a new one like it (always, for state that
                # is updated: one input has at most one new value)
                env[i] = self.new_input(i.shape, i.dtype, self.fills[i], i.attrs["kind"])
                return env[i]
            return i

        last = None
        for n in block:
            if n.is_input:
                env[n] = self.new_input(n.shape, n.dtype, self.fills[n], n.attrs["kind"])
                continue
            env[n] = last = self.emit(n.op, [operand(i) for i in n.inputs], **dict(n.attrs))
        for new, old in list(self.updates):
            if new in env and env[new] is not new:
                self.updates.append((env[new], operand(old)))
        return last

    def finish(self, last: Node) -> Case:
        outputs = [last]
        for n, _ in self.updates:
            if n not in outputs:
                outputs.append(n)
        for n in self.pool:
            if n not in outputs and self.coin(0.15):
                outputs.append(n)
        if self.coin(0.05):
            outputs.append(last)  # the same value under two names
        names = [f"out{i}" for i in range(len(outputs))]
        updates = {}
        for new, old in self.updates:
            updates[names[outputs.index(new)]] = old.name
        graph = self.b.build(outputs, names, meta={"updates": updates} if updates else None)
        fills = [self.fills[n] for n in graph.inputs]
        return Case(graph, fills, updates)

    def step_unary(self) -> Node:
        x = self.any_value(empty=True)
        if x.dtype == BOOL:
            return self.emit(self.choice(["logical_not", "sign", "copy"]), [x])
        if not x.dtype.is_floating_point:
            return self.emit(self.choice(["neg", "abs", "relu", "sign", "copy"]), [x])
        op = self.choice(
            ["neg", "relu", "abs", "exp", "tanh", "sigmoid", "log", "sqrt", "rsqrt"]
            + ["pow", "sign", "copy"]
        )
        if op in ("log", "sqrt", "rsqrt") and self.coin(0.6):
            x = self.positive(x)
        if op == "pow":
            e = self.choice([2.0, 3.0, 0.5, -1.0, 1.5, 0.0, 1.0, -2.0])
            if e != int(e) or e < 0:
                x = self.positive(x) if self.coin(0.7) else x
            return self.emit("pow", [x], exponent=e)
        return self.emit(op, [x])

    def step_binary(self) -> Node:
        x = self.any_value(empty=True)
        y = self.like(x)
        if x.dtype.is_floating_point:
            op = self.choice(["add", "mul", "sub", "div", "maximum", "minimum"])
        elif x.dtype == BOOL:
            op = self.choice(["add", "mul", "maximum", "minimum"])
        else:
            op = self.choice(["add", "mul", "sub", "maximum", "minimum"])
        if op == "div" and self.coin(0.7):
            y = self.positive(y)
        if self.coin(0.5):
            x, y = y, x
        return self.emit(op, [x, y])

    def step_compare(self) -> Node:
        x = self.any_value(empty=True)
        return self.emit(self.choice(["gt", "lt", "eq", "ne", "ge", "le"]), [x, self.like(x)])

    def step_logic(self) -> Node:
        x = self.any_value(empty=True)
        c = self.bool_like(x)
        if self.coin(0.3):
            return self.emit("logical_not", [c])
        return self.emit(self.choice(["logical_and", "logical_or"]), [c, self.bool_like(c)])

    def step_where(self) -> Node:
        x = self.any_value(empty=True)
        return self.emit("where", [self.bool_like(x), x, self.like(x)])

    def step_cast(self) -> Node:
        x = self.any_value(empty=True)
        dst = self.choice([d for d in (F32, F64, I64, BOOL, I32) if d != x.dtype])
        if not x.dtype.is_floating_point or dst.is_floating_point or dst == BOOL:
            return self.emit("cast", [x], dtype=dst)
        scaled = self.emit(
            "mul", [x, self.emit("full", [], value=4.0, shape=x.shape, dtype=x.dtype)]
        )
        return self.emit("cast", [scaled], dtype=dst)

    def step_view(self) -> Node:
        x = self.any_value(empty=True)
        shape, rank = x.shape, x.type.rank
        how = self.weighted(
            [
                ("reshape", 3),
                ("transpose", 3 if rank >= 2 else 0),
                ("slice", 3 if rank >= 1 else 0),
                ("broadcast", 2),
            ]
        )
        if how == "transpose":
            perm = tuple(self.draw(st.permutations(range(rank))))
            return self.emit("transpose", [x], perm=perm)
        if how == "slice":
            axis = self.int(0, rank - 1)
            n = shape[axis]
            start = n if self.coin(0.05) else self.int(0, max(n - 1, 0))  # n: an empty slice
            stop = self.choice([None, self.int(start, n)])
            return self.emit("slice", [x], axis=axis, start=start, stop=stop, step=self.int(1, 3))
        if how == "broadcast":
            lead = tuple(self.choice([2, 3]) for _ in range(self.int(0, 2)))
            out = lead + tuple(self.choice([1, 2, 3, 5]) if d == 1 else d for d in shape)
            if numel(out) > MAX_NUMEL:
                out = (1,) * len(lead) + shape
            return self.emit("broadcast_to", [x], shape=out)
        return self.emit("reshape", [x], shape=self.reshaped(shape))

    def reshaped(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = list(shape)
        how = self.weighted([("flatten", 2), ("merge", 3), ("split", 3), ("unit", 2)])
        if how == "flatten" or len(dims) > 4:
            return (numel(dims),)
        if how == "merge" and len(dims) >= 2:
            i = self.int(0, len(dims) - 2)
            return tuple(dims[:i] + [dims[i] * dims[i + 1]] + dims[i + 2 :])
        if how == "split":
            splittable = [i for i, d in enumerate(dims) if any(d % f == 0 for f in (2, 3))]
            if splittable:
                i = self.choice(splittable)
                f = 2 if dims[i] % 2 == 0 else 3
                return tuple(dims[:i] + [f, dims[i] // f] + dims[i + 1 :])
        if 1 in dims and self.coin(0.5):
            dims.remove(1)
            return tuple(dims)
        dims.insert(self.int(0, len(dims)), 1)
        return tuple(dims)

    def step_reduce(self) -> Node:
        x = self.value(
            lambda n: n.dtype != BOOL,
            lambda: self.new_input(self.shape(), self.choice([F32, F64, I64])),
        )
        op = self.choice(["reduce_sum", "reduce_max"])
        return self.emit(op, [x], axes=self.axes(x.type.rank), keepdims=self.coin(0.5))

    def step_normalize(self) -> Node:
        """softmax spelled out: the loops of a real model's normalisations and losses."""
        x = self.floating(rank_min=1)
        axis = self.int(0, x.type.rank - 1)

        def back(r):
            return self.emit("broadcast_to", [r], shape=x.shape)

        m = self.emit("reduce_max", [x], axes=(axis,), keepdims=True)
        e = self.emit("exp", [self.emit("sub", [x, back(m)])])
        s = self.emit("reduce_sum", [e], axes=(axis,), keepdims=True)
        return self.emit("div", [e, back(s)])

    def step_argmax(self) -> Node:
        x = self.any_value(rank_min=1)
        return self.emit("argmax", [x], axis=self.int(0, x.type.rank - 1), keepdims=self.coin(0.5))

    def step_softmax(self) -> Node:
        x = self.floating(rank_min=1)
        op = self.choice(["softmax", "log_softmax"])
        return self.emit(op, [x], axis=self.int(0, x.type.rank - 1))

    def image(self, channels: int | None = None) -> Node:
        """A float NCHW value: from the pool, or a fresh input (sometimes seen transposed)."""

        def make():
            n, c = self.int(1, 3), channels or self.int(1, 4)
            h, w = self.int(1, 11), self.int(1, 11)
            dtype = self.choice([F32, F32, F64])
            if self.coin(0.2):  # a non-contiguous view feeding a non-loop kernel
                src = self.new_input((n, c, w, h), dtype)
                return self.emit("transpose", [src], perm=(0, 1, 3, 2))
            return self.new_input((n, c, h, w), dtype)

        return self.value(
            lambda v: (
                v.type.rank == 4
                and v.dtype.is_floating_point
                and (channels is None or v.shape[1] == channels)
            ),
            make,
        )

    def pool_attrs(self, x: Node, op: str) -> dict:
        k = (self.int(1, 3), self.int(1, 3))
        attrs = dict(
            kernel_size=k,
            stride=(self.int(1, 3), self.int(1, 3)),
            padding=(self.int(0, k[0] // 2), self.int(0, k[1] // 2)),
            ceil_mode=self.coin(0.3),
        )
        if op == "max_pool2d":
            attrs["dilation"] = (self.int(1, 2), self.int(1, 2))
        else:
            attrs["count_include_pad"] = self.coin(0.7)
            attrs["divisor_override"] = self.choice([None, None, 3])
        return attrs

    def step_pool(self) -> Node:
        x = self.image()
        op = self.choice(["max_pool2d", "avg_pool2d"])
        y = self.try_emit(op, [x], **self.pool_attrs(x, op))
        if y is None:  # the input is too small for the drawn window
            y = self.emit(op, [x], kernel_size=(1, 1), stride=(1, 1))
        return y

    def step_pool_grad(self) -> Node:
        x = self.image()
        if self.coin(0.5):  # a ReLU output pooled by tiling windows: the fused backward kernel
            k = (self.int(1, 2), self.int(1, 2))
            if x.shape[2] < k[0] or x.shape[3] < k[1]:
                k = (1, 1)
            r = self.emit("relu", [x])
            attrs = dict(kernel_size=k, stride=k)
            y = self.emit("max_pool2d", [r], **attrs)
            dx = self.emit("max_pool2d_grad", [self.like(y), r], **attrs)
            zero = self.emit("full", [], value=0.0, shape=r.shape, dtype=r.dtype)
            mask = self.emit("gt", [r, zero])
            masked = self.emit("where", [mask, dx, zero])
            if self.coin(0.6):
                return self.emit("reduce_sum", [masked], axes=(0, 2, 3))
            return masked
        op = self.choice(["max_pool2d", "avg_pool2d"])
        attrs = self.pool_attrs(x, op)
        y = self.try_emit(op, [x], **attrs)
        if y is None:
            attrs = dict(kernel_size=(1, 1), stride=(1, 1))
            y = self.emit(op, [x], **attrs)
        g = self.like(y)
        if op == "max_pool2d":
            return self.emit("max_pool2d_grad", [g, x], **attrs)
        return self.emit("avg_pool2d_grad", [g], input_shape=x.shape, **attrs)

    def step_concat(self) -> Node:
        x = self.any_value(rank_min=1)
        axis = self.int(0, x.type.rank - 1)
        parts = [x]
        for _ in range(self.int(1, 2)):
            how = self.weighted([("input", 2), ("self", 1), ("sliced", 1)])
            if how == "self":
                parts.append(x)
            elif how == "sliced" and x.shape[axis] > 1:
                parts.append(self.emit("slice", [x], axis=axis, start=1, stop=None, step=1))
            else:
                shape = list(x.shape)
                shape[axis] = self.choice([1, 2, 3])
                parts.append(self.new_input(shape, x.dtype))
        if self.coin(0.5):
            parts.reverse()
        return self.emit("concat", parts, axis=axis)

    def step_pad_slice(self) -> Node:
        x = self.any_value(rank_min=1)
        axis = self.int(0, x.type.rank - 1)
        start, step = self.int(0, 2), self.int(1, 3)
        shape = list(x.shape)
        shape[axis] = start + step * (x.shape[axis] - 1) + 1 + self.int(0, 2)
        return self.emit("pad_slice", [x], shape=tuple(shape), axis=axis, start=start, step=step)

    def step_one_hot(self) -> Node:
        classes = self.int(1, 6)
        ignore = self.choice([None, -100, 0])
        dtype = self.choice([I64, I32])
        labels = self.new_input(
            self.shape(rank=self.int(0, 2), cap=64), dtype, Fill("labels", 0, classes - 1, ignore)
        )
        out = self.choice([F32, F64, I64])
        return self.emit("one_hot", [labels], num_classes=classes, ignore_index=ignore, dtype=out)

    def epilogue(self, y: Node, axis: int) -> Node:
        """Per-channel bias add and ReLU, as layers write them (fused into the kernel)."""
        if self.coin(0.6):
            c = y.shape[axis]
            bias = self.new_input((c,), y.dtype)
            keep = [1] * y.type.rank
            keep[axis] = c
            if axis != y.type.rank - 1 or self.coin(0.5):
                bias = self.emit("reshape", [bias], shape=tuple(keep))
            bias = self.emit("broadcast_to", [bias], shape=y.shape)
            y = self.emit("add", [y, bias] if self.coin(0.5) else [bias, y])
        if self.coin(0.5):
            y = self.emit("relu", [y])
        return y

    def step_matmul(self) -> Node:
        a = self.floating(rank_min=2) if self.coin(0.5) else None
        if a is None or numel(a.shape) > 512:
            batch = tuple(self.choice([2, 3]) for _ in range(self.int(0, 1)))
            a = self.new_input(batch + (self.int(1, 17), self.int(1, 17)), self.choice(FLOATS))
        trans_a, trans_b = self.coin(0.3), self.coin(0.3)
        k = a.shape[-2] if trans_a else a.shape[-1]
        n = self.int(1, 17)
        b = self.new_input(a.shape[:-2] + ((n, k) if trans_b else (k, n)), a.dtype)
        if self.coin(0.5):
            a = self.emit("neg", [a])  # a value computed just before the contraction
        y = self.emit("matmul", [a, b], trans_a=trans_a, trans_b=trans_b)
        return self.epilogue(y, y.type.rank - 1)

    def conv_attrs(self, c: int) -> dict:
        groups = self.choice([g for g in (1, 2, 3) if c % g == 0])
        return dict(
            stride=(self.int(1, 2), self.int(1, 2)),
            padding=(self.int(0, 2), self.int(0, 2)),
            dilation=(self.int(1, 2), self.int(1, 2)),
            groups=groups,
        )

    def step_conv(self) -> Node:
        x = self.image()
        c = x.shape[1]
        attrs = self.conv_attrs(c)
        o = attrs["groups"] * self.int(1, 3)
        w = self.new_input((o, c // attrs["groups"], self.int(1, 3), self.int(1, 3)), x.dtype)
        y = self.try_emit("conv2d", [x, w], **attrs)
        if y is None:
            w = self.new_input((o, c // attrs["groups"], 1, 1), x.dtype)
            y = self.emit("conv2d", [x, w], **{**attrs, "dilation": (1, 1)})
        return self.epilogue(y, 1)

    def step_conv_grad(self) -> Node:
        x = self.image()
        y = self.step_conv() if self.coin(0.3) else None
        if y is None or y.op != "conv2d":
            c = x.shape[1]
            attrs = self.conv_attrs(c)
            o = attrs["groups"] * self.int(1, 3)
            w = self.new_input((o, c // attrs["groups"], self.int(1, 3), self.int(1, 3)), x.dtype)
            y = self.try_emit("conv2d", [x, w], **attrs)
            if y is None:
                return self.step_conv()
        x, w = y.inputs
        attrs = {k: y.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
        g = self.like(y)
        if self.coin(0.5):
            return self.emit("conv2d_input_grad", [g, w], input_shape=x.shape, **attrs)
        return self.emit("conv2d_weight_grad", [x, g], weight_shape=w.shape, **attrs)

    def step_update(self) -> Node:
        """A state update as optimizers write them: new value of an input, paired with it."""
        taken = {old for _, old in self.updates}
        p = self.pick(lambda n: n.is_input and n.dtype.is_floating_point and n not in taken)
        if p is None:
            p = self.new_input(self.shape(rank=self.int(1, 3)), F32, kind="param")
        g = self.like(p)
        how = self.weighted([("sgd", 3), ("momentum", 2), ("mixed", 1)])
        if how == "momentum":
            m = self.new_input(p.shape, p.dtype, kind="state")
            m_new = self.emit("add", [self.emit("mul", [m, self.scalar(p, 0.9)]), g])
            self.updates.append((m_new, m))
            g = m_new
        step = self.emit("mul", [g, self.scalar(p, 0.1)])
        if how == "mixed" and p.type.rank >= 2 and p.shape[-1] == p.shape[-2]:
            perm = tuple(range(p.type.rank - 2)) + (p.type.rank - 1, p.type.rank - 2)
            step = self.emit("add", [step, self.emit("transpose", [p], perm=perm)])
        new = self.emit("sub", [p, step])
        self.updates.append((new, p))
        if self.coin(0.3):  # the old value read after the new one, in the same loop
            return self.emit(self.choice(["sub", "mul"]), [new, p])
        return new

    def scalar(self, like: Node, value: float) -> Node:
        return self.emit("full", [], value=value, shape=like.shape, dtype=like.dtype)

    def step_rng(self) -> Node:
        seed = self.new_input((), I64, Fill("int", 0, 1000))
        offset = self.new_input((), I64, Fill("int", 0, 50))
        return self.emit("rng_uniform", [seed, offset], shape=self.shape(), dtype=F32)
