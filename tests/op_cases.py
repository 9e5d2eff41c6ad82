"""The per-op case tables and the checks every case goes through (JAX lax_autodiff_test style).

`CASES[family]` lists `OpCase`s: an op, the types and value domains of its inputs, and attrs.
Each tests/test_ops_<family>.py runs its family's cases through
- `check_rule_and_ref`: the numpy reference agrees with the type rule (via `Op.evaluate`),
  does not modify its inputs, and the flops count is a non-negative int;
- `check_vjp`: derive_backward's gradient of sum(out * cotangent), interpreted in float64,
  equals float64 central finite differences (on a random subset of coordinates).

Value domains keep finite differences away from kinks: `real` never comes near 0 (relu,
abs, sign, division), `distinct` values are spaced far wider than eps (max, pooling, argmax).
Expected output shapes for conv and pooling are computed here from PyTorch's documented
formulas, independently of graphc's own `out_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from graphc import dtypes
from graphc.dtypes import DType
from graphc.interpreter import interpret
from graphc.ir import ConstArray, GraphBuilder, TensorType
from graphc.ops import OPS
from graphc.ops.registry import NoGrad
from graphc.passes import derive_backward

F32, F64, I64, I32, BOOL = dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32, dtypes.bool_

# ---- value domains: (rng, shape, np dtype) -> array ----------------------------------------

Domain = Callable[[np.random.Generator, tuple[int, ...], type], np.ndarray]


def real(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    """Values in ±[0.2, 1.5]: never near 0, where relu, abs, sign and 1/x have kinks or poles."""
    mag = rng.uniform(0.2, 1.5, shape)
    return (mag * rng.choice([-1.0, 1.0], shape)).astype(dt)


def positive(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape).astype(dt)


def distinct(shift: float = 0.0) -> Domain:
    """All-different values on a grid whose spacing dwarfs eps (no max ties, stable argmax).

    Two inputs drawn with shifts 0 and 0.5 lie on interleaved grids: never equal.
    """

    def make(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        step = min(0.05, 4.0 / max(n, 1))
        grid = (rng.permutation(n) - (n - 1) / 2 + shift) * step
        return grid.reshape(shape).astype(dt)

    return make


def ints(lo: int, hi: int) -> Domain:
    return lambda rng, shape, dt: rng.integers(lo, hi, shape).astype(dt)


def bools(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    return rng.random(shape) < 0.5


def fixed(values: Any) -> Domain:
    return lambda rng, shape, dt: np.asarray(values, dt).reshape(shape)


@dataclass(frozen=True)
class Arg:
    shape: tuple[int, ...]
    dtype: DType
    domain: Domain = real

    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def make(self, rng: np.random.Generator, dtype: DType | None = None) -> np.ndarray:
        dt = (dtype or self.dtype).np
        return np.asarray(self.domain(rng, self.shape, dt), dt)  # 0-d: an array, not a scalar


def f32(*shape: int, domain: Domain = real) -> Arg:
    return Arg(tuple(shape), F32, domain)


def f64(*shape: int, domain: Domain = real) -> Arg:
    return Arg(tuple(shape), F64, domain)


SMALL_INTS = ints(-5, 6)


def i64(*shape: int, domain: Domain = SMALL_INTS) -> Arg:
    return Arg(tuple(shape), I64, domain)


def i32(*shape: int, domain: Domain = SMALL_INTS) -> Arg:
    return Arg(tuple(shape), I32, domain)


def boolean(*shape: int) -> Arg:
    return Arg(tuple(shape), BOOL, bools)


# ---- cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCase:
    op: str
    args: tuple[Arg, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    vjp: bool = True  # False: this case's derivative is not what finite differences measure
    eps: float = 1e-6
    rtol: float = 1e-6
    atol: float = 1e-7

    @property
    def id(self) -> str:
        types = ",".join(str(a.type()) for a in self.args)
        attrs = ",".join(f"{k}={_brief(v)}" for k, v in self.attrs.items())
        return f"{self.op}({types}){{{attrs}}}" if attrs else f"{self.op}({types})"

    def types(self) -> list[TensorType]:
        return [a.type() for a in self.args]

    def full_attrs(self) -> dict[str, Any]:
        return OPS[self.op].full_attrs(self.attrs)


def _brief(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_brief(x) for x in v) + ")"
    if isinstance(v, ConstArray):
        return f"const{list(v.array.shape)}"
    return str(v)


def case(op: str, /, *args: Arg, **kw: Any) -> OpCase:
    """case("conv2d", f32(...), f32(...), stride=(2, 2), vjp=False): attrs go in the dict."""
    opts = {k: kw.pop(k) for k in ("vjp", "eps", "rtol", "atol") if k in kw}
    return OpCase(op, tuple(args), kw, **opts)


def torch_out_size(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    """The output-size formula from PyTorch's Conv2d / MaxPool2d / AvgPool2d docs."""
    num = size + 2 * p - d * (k - 1) - 1
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:  # docs: the last window must start inside the input
        out -= 1
    return out


def conv_cases(x: Sequence[int], w: Sequence[int], **attrs: Any) -> list[OpCase]:
    """conv2d and both of its gradient ops on one geometry."""
    stride = attrs.get("stride", (1, 1))
    pad = attrs.get("padding", (0, 0))
    dil = attrs.get("dilation", (1, 1))
    oh, ow = (torch_out_size(x[2 + i], w[2 + i], stride[i], pad[i], dil[i]) for i in range(2))
    out = (x[0], w[0], oh, ow)
    return [
        case("conv2d", f32(*x), f32(*w), **attrs),
        case("conv2d_input_grad", f32(*out), f32(*w), input_shape=tuple(x), **attrs),
        case("conv2d_weight_grad", f32(*x), f32(*out), weight_shape=tuple(w), **attrs),
    ]


def pool_cases(x: Sequence[int], kind: str = "both", **attrs: Any) -> list[OpCase]:
    """Pooling (max and/or avg) and its gradient op on one geometry."""
    k, s = attrs["kernel_size"], attrs["stride"]
    pad = attrs.get("padding", (0, 0))
    dil = attrs.get("dilation", (1, 1))
    ceil = attrs.get("ceil_mode", False)
    oh, ow = (torch_out_size(x[2 + i], k[i], s[i], pad[i], dil[i], ceil) for i in range(2))
    g = f32(x[0], x[1], oh, ow)
    cases = []
    if kind in ("both", "max"):
        max_attrs = {
            a: v for a, v in attrs.items() if a not in ("count_include_pad", "divisor_override")
        }
        cases += [
            case("max_pool2d", f32(*x, domain=distinct()), **max_attrs),
            case("max_pool2d_grad", g, f32(*x, domain=distinct()), **max_attrs),
        ]
    if kind in ("both", "avg"):
        avg_attrs = {a: v for a, v in attrs.items() if a != "dilation"}
        cases += [
            case("avg_pool2d", f32(*x), **avg_attrs),
            case("avg_pool2d_grad", g, input_shape=tuple(x), **avg_attrs),
        ]
    return cases


# ---- the tables ---------------------------------------------------------------------------

# Odd sizes (not multiples of the vector width), size-1 dims, 0-d and empty tensors.
EW_SHAPES = [(), (1,), (17,), (3, 5), (2, 1, 7)]


def above_minus_one(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    """log1p's domain, kept away from its pole at -1."""
    return rng.uniform(-0.8, 2.0, shape).astype(dt)


_UNARY_DOMAINS: dict[str, Domain] = {
    "neg": real,
    "exp": real,
    "expm1": real,
    "log1p": above_minus_one,
    "erf": real,
    "log": positive,
    "sqrt": positive,
    "rsqrt": positive,
    "tanh": real,
    "sigmoid": real,
    "relu": real,
    "abs": real,
    "sign": real,
}


def _elementwise_cases() -> list[OpCase]:
    cases = []
    for op, dom in _UNARY_DOMAINS.items():
        cases += [case(op, f32(*s, domain=dom)) for s in EW_SHAPES]
    cases += [case("sigmoid", f32(9, domain=fixed(np.linspace(-40, 40, 9))))]  # saturation
    cases += [case("erf", f64(9, domain=fixed(np.linspace(-6, 6, 9))))]  # saturation
    tiny = [-1e-9, -1e-5, 0.0, 1e-7, 3e-4]  # where log(1 + x) and exp(x) - 1 lose digits
    cases += [case(op, f64(5, domain=fixed(tiny))) for op in ("log1p", "expm1")]
    for op in ("neg", "abs", "relu", "sign"):
        cases += [case(op, i64(3, 4)), case(op, f64(0, 3))]
    cases += [case("sign", boolean(5))]
    for op in ("add", "sub", "mul", "div"):
        cases += [case(op, f32(*s), f32(*s)) for s in EW_SHAPES]
    for op in ("add", "sub", "mul"):
        cases += [case(op, i64(2, 3), i64(2, 3)), case(op, i32(4), i32(4))]
    cases += [case("add", boolean(6), boolean(6)), case("mul", boolean(6), boolean(6))]
    for op in ("maximum", "minimum"):
        a, b = distinct(0.0), distinct(0.5)  # interleaved grids: no ties
        cases += [case(op, f32(*s, domain=a), f32(*s, domain=b)) for s in EW_SHAPES]
        cases += [case(op, i64(3, 2), i64(3, 2)), case(op, boolean(4), boolean(4))]
    for exponent, dom in [
        (2.0, real),
        (3.0, real),
        (1.0, real),
        (0.0, real),
        (-1.0, real),
        (0.5, positive),
        (-1.5, positive),
        (2.7, positive),
    ]:
        cases += [case("pow", f32(3, 5, domain=dom), exponent=exponent)]
    cases += [case("pow", f32(domain=positive)), case("pow", f64(1, 7, domain=positive))]
    for op in ("eq", "ne", "lt", "le", "gt", "ge"):
        cases += [
            case(op, f32(3, 5, domain=distinct()), f32(3, 5, domain=distinct(0.5))),
            case(op, i64(7), i64(7)),
            case(op, f64(), f64()),
            case(op, boolean(2, 3), boolean(2, 3)),
        ]
    for op in ("logical_and", "logical_or"):
        cases += [case(op, boolean(*s), boolean(*s)) for s in [(), (7,), (2, 3)]]
    cases += [case("logical_not", boolean(*s)) for s in [(), (7,), (2, 3)]]
    cases += [case("where", boolean(*s), f32(*s), f32(*s)) for s in EW_SHAPES]
    cases += [case("where", boolean(4), i64(4), i64(4))]
    for src, dst, kw in [
        (f32(3, 5), F64, {}),
        (f64(3, 5), F32, {"eps": 1e-3, "rtol": 1e-4, "atol": 1e-5}),  # f32 rounding vs eps
        (f32(3, 5), I64, {}),
        (i64(7), F32, {}),
        (boolean(7), F32, {}),
        (f64(), F64, {}),  # a no-op cast of a 0-d tensor
        (f32(4, domain=fixed([0.0, -1.5, 2.0, 0.0])), BOOL, {}),
        (i32(2, 3), I64, {}),
    ]:
        cases += [case("cast", src, dtype=dst, **kw)]
    cases += [case("copy", f32(*s)) for s in EW_SHAPES] + [case("copy", i64(3))]
    # stop_gradient's derivative is zero by definition, not by calculus: its own test.
    cases += [case("stop_gradient", f32(*s), vjp=False) for s in EW_SHAPES]
    return cases


def _shape_cases() -> list[OpCase]:
    cases = [
        case("reshape", f32(3, 4), shape=(2, 6)),
        case("reshape", f32(12), shape=(1, 3, 1, 4)),
        case("reshape", f32(), shape=(1, 1)),
        case("reshape", f32(1, 1), shape=()),
        case("reshape", f32(0, 3), shape=(3, 0)),
        case("reshape", i64(2, 3), shape=(6,)),
        case("transpose", f32(3, 5), perm=(1, 0)),
        case("transpose", f32(2, 3, 5), perm=(2, 0, 1)),
        case("transpose", f32(2, 1, 3, 5), perm=(3, 1, 0, 2)),
        case("transpose", f32(4, 3), perm=(0, 1)),
        case("transpose", f32(), perm=()),
        case("transpose", boolean(2, 3), perm=(1, 0)),
        case("broadcast_to", f32(3, 1), shape=(2, 3, 4)),
        case("broadcast_to", f32(), shape=(2, 3)),
        case("broadcast_to", f32(1), shape=(5,)),
        case("broadcast_to", f32(4), shape=(4,)),
        case("broadcast_to", f32(1, 5, 1), shape=(3, 5, 7)),
        case("broadcast_to", f32(3), shape=(0, 3)),
        case("broadcast_to", i64(1, 2), shape=(3, 2)),
        case("slice", f32(7, 3), axis=0, start=1, stop=6, step=2),
        case("slice", f32(7, 3), axis=0, start=0, stop=7, step=3),
        case("slice", f32(2, 9), axis=1, start=2, stop=9, step=4),
        case("slice", f32(2, 9), axis=1, start=8, stop=9),
        case("slice", f32(5), start=2),  # stop defaults to the end
        case("slice", f32(5, 2), axis=0, start=3, stop=3),  # empty
        case("slice", f32(2, 3, 4), axis=2, start=1, stop=4, step=5),
        case("slice", i64(6), start=1, stop=5, step=2),
        case("pad_slice", f32(3, 2), shape=(7, 2), axis=0, start=1, step=2),
        case("pad_slice", f32(3, 2), shape=(5, 2), axis=0, start=0, step=2),  # ends at the edge
        case("pad_slice", f32(2, 2), shape=(2, 9), axis=1, start=2, step=4),
        case("pad_slice", f32(1), shape=(1,)),
        case("pad_slice", f32(0, 2), shape=(4, 2), axis=0, start=1, step=1),
        case("pad_slice", f32(2, 3, 2), shape=(2, 3, 4), axis=2, start=1, step=2),
        case("concat", f32(2, 3), f32(4, 3), axis=0),
        case("concat", f32(2, 3), f32(2, 1), f32(2, 5), axis=1),
        case("concat", f32(3), f32(0), f32(1), axis=0),
        case("concat", f32(1, 2, 3), axis=2),
        case("concat", i64(2), i64(3), axis=0),
        case("cumsum", f32(7), axis=0),
        case("cumsum", f32(3, 5), axis=1),
        case("cumsum", f32(2, 4, 3), axis=1, reverse=True),
        case("cumsum", f64(1, 17), axis=1),
        case("cumsum", f32(0, 3), axis=0),
        case("cumsum", i64(3, 4), axis=0),
    ]
    return cases


def _index_cases() -> list[OpCase]:
    """Repeated indices everywhere: their gradients must add up, in index order."""
    return [
        case("index_select", f32(5, 3), i64(7, domain=ints(0, 5)), axis=0),
        case("index_select", f32(5, 3), i64(2, 4, domain=ints(0, 5)), axis=0),  # embedding
        case("index_select", f32(2, 6, 3), i64(4, domain=ints(0, 6)), axis=1),
        case("index_select", f32(2, 3, 4), i32(5, domain=ints(0, 4)), axis=2),
        case("index_select", f32(5, 3), i64(domain=fixed(4)), axis=0),
        case("index_select", f32(5, 2), i64(0), axis=0),
        case("index_select", i64(4, 2), i64(3, domain=ints(0, 4)), axis=0),
        # padding_idx's rows get no gradient by definition (nn.Embedding), not by calculus
        case(
            "index_select", f32(6, 4), i64(9, domain=ints(0, 6)), axis=0, padding_idx=2, vjp=False
        ),
        case("index_add", f32(7, 3), i64(7, domain=ints(0, 5)), axis=0, shape=(5, 3)),
        case("index_add", f32(2, 4, 3), i64(2, 4, domain=ints(0, 5)), axis=0, shape=(5, 3)),
        case("index_add", f32(2, 4, 3), i64(4, domain=ints(0, 6)), axis=1, shape=(2, 6, 3)),
        case(
            "index_add",
            f32(8, 2),
            i64(8, domain=fixed([0, 3, 1, 3, 0, 2, 3, 1])),
            axis=0,
            shape=(4, 2),
            ignore_index=3,
        ),
        case("gather", f32(3, 5), i64(3, 7, domain=ints(0, 5)), axis=1),
        case("gather", f32(4, 3), i64(6, 3, domain=ints(0, 4)), axis=0),
        case("gather", f32(2, 5, 3), i32(2, 2, 3, domain=ints(0, 5)), axis=1),
        case("gather", f64(6), i64(9, domain=ints(0, 6)), axis=0),
        case("gather", i64(3, 4), i64(3, 2, domain=ints(0, 4)), axis=1),
        case("scatter_add", f32(3, 7), i64(3, 7, domain=ints(0, 5)), axis=1, shape=(3, 5)),
        case("scatter_add", f32(6, 3), i64(6, 3, domain=ints(0, 4)), axis=0, shape=(4, 3)),
        case("scatter_add", f32(2, 2, 3), i32(2, 2, 3, domain=ints(0, 5)), axis=1, shape=(2, 5, 3)),
    ]


def _reduction_cases() -> list[OpCase]:
    cases = []
    for x, axes in [
        ((3, 5), ()),
        ((3, 5), (0,)),
        ((3, 5), (1,)),
        ((3, 5), (0, 1)),
        ((2, 3, 7), (0, 2)),
        ((2, 1, 7), (1,)),
        ((), ()),
        ((17,), (0,)),
        ((0, 3), (0,)),
    ]:
        for keepdims in (False, True):
            cases += [case("reduce_sum", f32(*x), axes=axes, keepdims=keepdims)]
            if 0 not in x:
                dom = distinct()
                cases += [case("reduce_max", f32(*x, domain=dom), axes=axes, keepdims=keepdims)]
    cases += [
        case("reduce_sum", i64(3, 4), axes=(1,)),
        case("reduce_sum", f64(2, 3), axes=(0, 1), keepdims=True),
        case("reduce_max", i64(3, 4), axes=(0,)),
    ]
    for x, axis in [((3, 5), 0), ((3, 5), 1), ((2, 1, 7), 2), ((1,), 0), ((4, 3), 1)]:
        for keepdims in (False, True):
            cases += [case("argmax", f32(*x, domain=distinct()), axis=axis, keepdims=keepdims)]
    cases += [case("argmax", i64(9, domain=fixed([1, 5, 2, 5, 0, 5, 3, 1, 1])), axis=0)]
    return cases


def _linalg_cases() -> list[OpCase]:
    cases = []
    m, k, n = 3, 5, 4
    for ta in (False, True):
        for tb in (False, True):
            a = (k, m) if ta else (m, k)
            b = (n, k) if tb else (k, n)
            cases += [case("matmul", f32(*a), f32(*b), trans_a=ta, trans_b=tb)]
            cases += [
                case("matmul", f32(2, 3, *a), f32(2, 3, *b), trans_a=ta, trans_b=tb),
            ]
    cases += [
        case("matmul", f32(1, 7), f32(7, 1)),
        case("matmul", f32(17, 1), f32(1, 19)),
        case("matmul", f32(1, 2, 9), f32(1, 9, 3)),
        case("matmul", f64(5, 3), f64(5, 2), trans_a=True),
        case("matmul", f32(3, 0), f32(0, 2)),  # empty inner dimension: zeros
    ]
    return cases


def _conv_cases() -> list[OpCase]:
    cases = []
    cases += conv_cases((2, 3, 7, 6), (4, 3, 3, 2))
    cases += conv_cases((1, 2, 9, 8), (3, 2, 3, 3), stride=(2, 3), padding=(1, 2))
    cases += conv_cases((2, 2, 7, 7), (2, 2, 2, 3), dilation=(2, 1), padding=(0, 1))
    cases += conv_cases((1, 4, 5, 6), (6, 2, 3, 3), padding=(1, 1), groups=2)
    cases += conv_cases((2, 3, 6, 5), (3, 1, 3, 3), stride=(2, 2), groups=3)  # depthwise
    cases += conv_cases((3, 5, 1, 1), (2, 5, 1, 1))
    cases += conv_cases((1, 1, 8, 7), (1, 1, 2, 2), stride=(3, 3))  # rows no window reads
    cases += conv_cases(
        (1, 4, 9, 9), (4, 2, 3, 2), stride=(2, 2), padding=(2, 1), dilation=(2, 2), groups=2
    )
    return cases


def _pool_cases() -> list[OpCase]:
    cases = []
    cases += pool_cases((2, 3, 7, 6), kernel_size=(2, 2), stride=(2, 2))
    cases += pool_cases((1, 2, 8, 7), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    cases += pool_cases(
        (1, 2, 8, 7), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True
    )
    cases += pool_cases((2, 1, 5, 5), kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))
    cases += pool_cases((1, 2, 7, 8), kernel_size=(2, 3), stride=(3, 2), ceil_mode=True)
    cases += pool_cases((1, 1, 1, 1), kernel_size=(1, 1), stride=(1, 1))
    cases += pool_cases((1, 2, 6, 5), kernel_size=(2, 2), stride=(2, 2), ceil_mode=True)
    cases += pool_cases(
        (1, 2, 7, 6), "max", kernel_size=(2, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)
    )
    cases += pool_cases(
        (2, 2, 7, 6), "max", kernel_size=(3, 2), stride=(2, 1), dilation=(2, 2), ceil_mode=True
    )
    cases += pool_cases(
        (1, 2, 6, 7),
        "avg",
        kernel_size=(3, 3),
        stride=(2, 2),
        padding=(1, 1),
        count_include_pad=False,
    )
    cases += pool_cases(
        (1, 2, 6, 7),
        "avg",
        kernel_size=(3, 2),
        stride=(2, 2),
        padding=(1, 1),
        ceil_mode=True,
        count_include_pad=False,
    )
    cases += pool_cases(
        (2, 1, 5, 6), "avg", kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), divisor_override=5
    )
    return cases


def _nn_cases() -> list[OpCase]:
    cases = []
    for op in ("softmax", "log_softmax"):
        for x, axis in [((3, 7), 1), ((3, 7), 0), ((2, 1, 5), 1), ((2, 3, 5), 1), ((4,), 0)]:
            cases += [case(op, f32(*x), axis=axis)]
        cases += [case(op, f32(2, 3, domain=fixed([[50, 0, -50], [1e3, 1e3, 0]])), axis=1)]
    cases += [
        case("one_hot", i64(5, domain=ints(0, 7)), num_classes=7),
        case("one_hot", i64(2, 3, domain=ints(0, 4)), num_classes=4, dtype=F64),
        case("one_hot", i32(4, domain=fixed([0, 2, 2, 1])), num_classes=3, dtype=I64),
        case("one_hot", i64(domain=fixed(1)), num_classes=2),
        case("one_hot", i64(4, domain=fixed([3, -100, 0, -100])), num_classes=4, ignore_index=-100),
        case("one_hot", i64(4, domain=fixed([3, 0, 1, 0])), num_classes=4, ignore_index=0),
        case("one_hot", i64(3, domain=ints(0, 1)), num_classes=1, dtype=BOOL),
    ]
    # batch_norm's derivative goes through the statistics of x (its other operands), which
    # finite differences of the op alone do not see: test_ops_nn.py checks it through
    # F.batch_norm instead.
    for shape, axes in [((4, 3, 5, 5), (0, 2, 3)), ((6, 2), (0,)), ((3, 4, 7), (0, 2))]:
        args = [f32(*shape) for _ in range(5)]
        cases += [case("batch_norm", *args, axes=axes, vjp=False)]
    return cases


def probability(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    """Probabilities kept away from 0 and 1, where BCE's gradient formula takes over."""
    return rng.uniform(0.05, 0.95, shape).astype(dt)


def unit_interval(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    return rng.uniform(0.0, 1.0, shape).astype(dt)


def _loss_cases() -> list[OpCase]:
    cases = [
        case("binary_cross_entropy", f32(*s, domain=probability), f32(*s, domain=unit_interval))
        for s in EW_SHAPES
    ]
    cases += [case("binary_cross_entropy", f64(4, 3, domain=probability), f64(4, 3, domain=bools))]
    # the ends: log(0) = -inf is clamped to -100, and so is log(1e-45) < -100
    ends = [0.0, 1.0, 1e-45, 1e-30, 1.0 - 2**-24, 0.5]
    cases += [
        case(
            "binary_cross_entropy",
            f32(2, 6, domain=fixed([ends, ends])),
            f32(2, 6, domain=fixed([[0.0] * 6, [1.0] * 6])),
            vjp=False,  # PyTorch's gradient formula, not the clamped logs' derivative
        )
    ]
    return cases


def _seed(v: int) -> Arg:
    return Arg((), I64, fixed(v))


def _creation_cases() -> list[OpCase]:
    const = np.arange(6, dtype=np.float32).reshape(2, 3)
    return [
        case("full", value=1.5),
        case("full", value=-2.0, shape=(3, 1, 5)),
        case("full", value=7, shape=(4,), dtype=I64),
        case("full", value=True, shape=(2, 2), dtype=BOOL),
        case("full", value=0.25, shape=(0, 3), dtype=F64),
        case("constant", value=ConstArray(const)),
        case("constant", value=ConstArray(np.array(3, np.int64))),
        case("constant", value=ConstArray(np.array([True, False]))),
        case("arange", size=5),
        case("arange", start=2, step=3, size=4),
        case("arange", start=0.5, step=-0.25, size=7, dtype=F32),
        case("arange", size=0),
        case("rng_uniform", _seed(0), _seed(0), shape=(3, 7)),
        case("rng_uniform", _seed(42), _seed(5), shape=(), dtype=F64),
        case("rng_normal", _seed(1), _seed(0), shape=(17,)),
        case("rng_normal", _seed(3), _seed(2), shape=(2, 1, 3), dtype=F64),
    ]


_LOCAL_COMM: list = []


def local_comm(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    """The `comm` input of collectives: the address of a one-process local communicator
    (every all-reduce of one rank's data is that data)."""
    if not _LOCAL_COMM:
        from graphc.distributed.comm import Communicator

        _LOCAL_COMM.append(Communicator(None))
    return np.array(_LOCAL_COMM[0].address, np.int64)


def _collective_cases() -> list[OpCase]:
    comm = Arg((), I64, local_comm)
    return [
        case("all_reduce_start", comm, f32(3, 5)),
        case("all_reduce_start", comm, f32(2, 3), f32(), f32(1, 1, 4), bucket=3),
        case("all_reduce_start", comm, i64(7), reduction="max"),
        case("all_reduce_start", comm, f64(4), reduction="min", graph_hash=0),
        case("all_reduce_wait", comm, f32(15)),
        case("all_reduce_wait", comm, f32(9), scale=0.25, bucket=1),
        case("all_reduce_wait", comm, i32(6), reduction="max"),
    ]


def _rnn_body(hidden: int, batch: int, saved: bool = False):
    """A tanh RNN step: h' = tanh(h @ w + x); y = h' * h (carries and outputs interact)."""
    from graphc.ir import Body
    from graphc.ops.scan_vjp import plan_saved, with_saved

    b = GraphBuilder("body")
    h = b.add_input("c0", TensorType((batch, hidden), F64), "carry")
    x = b.add_input("x0", TensorType((batch, hidden), F64), "x")
    w = b.add_input("k0", TensorType((hidden, hidden), F64), "const")
    new = b.tanh(b.add(b.matmul(h, w), x))
    body = b.build([new, b.mul(new, h)], ["carry0", "y0"])
    if saved:
        body = with_saved(body, 1, 1, plan_saved(body, 1, 1, 1))
    return Body(body)


def _swap_body(n: int):
    """Two carries that trade places each step, scaled by the step's x: staged copies."""
    from graphc.ir import Body

    b = GraphBuilder("body")
    a = b.add_input("c0", TensorType((n,), F64), "carry")
    c = b.add_input("c1", TensorType((n,), F64), "carry")
    x = b.add_input("x0", TensorType((n,), F64), "x")
    body = b.build([c, b.mul(a, x), b.add(a, c)], ["carry0", "carry1", "y0"])
    return Body(body)


def _scan_cases() -> list[OpCase]:
    steps = dict(num_carry=1, num_xs=1, num_ys=1)
    return [
        case("scan", f64(2, 3), f64(5, 2, 3), f64(3, 3), body=_rnn_body(3, 2), length=5, **steps),
        case(
            "scan",
            f64(2, 3),
            f64(4, 2, 3),
            f64(3, 3),
            body=_rnn_body(3, 2, saved=True),
            length=4,
            reverse=True,
            **steps,
        ),
        case(
            "scan",
            f64(5),
            f64(5),
            f64(3, 5),
            body=_swap_body(5),
            length=3,
            num_carry=2,
            num_xs=1,
            num_ys=1,
        ),
    ]


CASES: dict[str, list[OpCase]] = {
    "elementwise": _elementwise_cases(),
    "shape": _shape_cases(),
    "reduction": _reduction_cases(),
    "index": _index_cases(),
    "linalg": _linalg_cases(),
    "conv": _conv_cases(),
    "pool": _pool_cases(),
    "nn": _nn_cases(),
    "loss": _loss_cases(),
    "creation": _creation_cases(),
    "collective": _collective_cases(),
    "scan": _scan_cases(),
}
ALL_CASES: list[OpCase] = [c for cs in CASES.values() for c in cs]


# ---- the checks ---------------------------------------------------------------------------


def make_inputs(c: OpCase, rng: np.random.Generator, float64: bool = False) -> list[np.ndarray]:
    """Random inputs for a case; with float64, floating inputs are drawn in float64."""
    out = []
    for a in c.args:
        dt = F64 if float64 and a.dtype.is_floating_point else a.dtype
        out.append(a.make(rng, dt))
    return out


def run_ref(op: str, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    """The reference, held to the type rule's promise by Op.evaluate."""
    o = OPS[op]
    full = o.full_attrs(attrs)
    types = [TensorType(a.shape, dtypes.from_numpy(a.dtype)) for a in arrays]
    with np.errstate(all="ignore"):  # as the interpreter runs it: IEEE inf/nan, wrapping ints
        return o.evaluate(arrays, full, o.infer(types, full))


def check_rule_and_ref(c: OpCase, rng: np.random.Generator) -> np.ndarray:
    o = OPS[c.op]
    full = c.full_attrs()
    out_type = o.infer(c.types(), full)
    arrays = make_inputs(c, rng)
    before = [a.copy() for a in arrays]
    with np.errstate(all="ignore"):
        out = o.evaluate(arrays, full, out_type)  # raises if shape or dtype break the promise
    assert out.shape == out_type.shape and out.dtype == np.dtype(out_type.dtype.np)
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{c.op}'s reference modified its input")
    if o.flops is not None:
        n = o.flops(out_type, *c.types(), **full)
        assert isinstance(n, int) and n >= 0, f"{c.op}: flops gave {n!r}"
    return out


def vjp(
    op: str,
    arrays: Sequence[np.ndarray],
    attrs: Mapping[str, Any],
    cotangent: np.ndarray,
    wrt: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Gradients of sum(op(*arrays) * cotangent) w.r.t. the floating inputs (or `wrt`).

    The graph is what a traced backward() leaves: `grad` placeholders, expanded by
    derive_backward and run on the reference interpreter in the arrays' own dtypes.
    """
    b = GraphBuilder("vjp_check")
    ins = [
        b.add_input(f"x{i}", TensorType(a.shape, dtypes.from_numpy(a.dtype)))
        for i, a in enumerate(arrays)
    ]
    out = b.emit(op, ins, attrs)
    ct = b.emit("constant", [], {"value": cotangent})
    if out.dtype != ct.dtype:  # e.g. a cast to f32 or an integer result, summed in the ct's type
        out = b.cast(out, dtype=ct.dtype)
    loss = b.reduce_sum(b.mul(out, ct), axes=tuple(range(out.type.rank)))
    if wrt is None:
        wrt = [i for i, a in enumerate(arrays) if np.issubdtype(a.dtype, np.floating)]
    graph = derive_backward(b.build([b.grad(loss, ins[i]) for i in wrt]))
    assert not any(n.op == "grad" for n in graph.nodes), "derive_backward left a placeholder"
    return interpret(graph, list(arrays))


def numerical_vjp(
    c: OpCase,
    arrays: list[np.ndarray],
    cotangent: np.ndarray,
    index: int,
    coords: np.ndarray,
) -> np.ndarray:
    """Central differences of sum(op(*arrays) * cotangent) at flat `coords` of input `index`."""

    def loss(xs: list[np.ndarray]) -> float:
        return float(np.sum(run_ref(c.op, xs, c.attrs).astype(np.float64) * cotangent))

    out = np.empty(len(coords))
    for n, flat in enumerate(coords):
        xs = [a.copy() for a in arrays]
        x = xs[index].reshape(-1)
        x[flat] += c.eps
        up = loss(xs)
        x[flat] -= 2 * c.eps
        down = loss(xs)
        out[n] = (up - down) / (2 * c.eps)
    return out


def differentiable_cases(cases: Sequence[OpCase]) -> list[OpCase]:
    """Cases whose VJP finite differences can check: a floating input, no refusing NoGrad."""
    out = []
    for c in cases:
        v = OPS[c.op].vjp
        unsupported = isinstance(v, NoGrad) and v.unsupported
        if c.vjp and not unsupported and any(a.dtype.is_floating_point for a in c.args):
            out.append(c)
    return out


def check_vjp(c: OpCase, rng: np.random.Generator, max_coords: int = 20) -> None:
    arrays = make_inputs(c, rng, float64=True)
    out = run_ref(c.op, arrays, c.attrs)
    cotangent = rng.standard_normal(out.shape)
    wrt = [i for i, a in enumerate(arrays) if np.issubdtype(a.dtype, np.floating)]
    grads = vjp(c.op, arrays, c.attrs, cotangent, wrt)
    for i, g in zip(wrt, grads, strict=True):
        assert g.shape == arrays[i].shape and g.dtype == arrays[i].dtype
        n = arrays[i].size
        coords = np.arange(n) if n <= max_coords else rng.choice(n, max_coords, replace=False)
        expect = numerical_vjp(c, arrays, cotangent, i, coords)
        np.testing.assert_allclose(
            g.reshape(-1)[coords],
            expect,
            rtol=c.rtol,
            atol=c.atol,
            err_msg=f"VJP of {c.op} w.r.t. input {i} disagrees with finite differences",
        )


def params(cases: Sequence[OpCase]) -> list:
    """pytest parameters named by the case (op, input types, attrs)."""
    return [pytest.param(c, id=c.id) for c in cases]


def infer(op: str, /, *types: TensorType, **attrs: Any) -> TensorType:
    """The type rule of `op` as make_node runs it (defaults filled in, arity checked)."""
    o = OPS[op]
    return o.infer(types, o.full_attrs(attrs))


def t(shape: Sequence[int], dtype: DType = F32) -> TensorType:
    return TensorType(tuple(shape), dtype)


def check_second_order(
    op: str,
    arrays: Sequence[np.ndarray],
    attrs: Mapping[str, Any],
    rng: np.random.Generator,
    eps: float = 1e-5,
    max_coords: int = 10,
) -> None:
    """Differentiates a derived gradient again (grad of grad, as in a gradient penalty).

    loss2 = sum_i <d loss1 / d x_i, c_i> with loss1 = <op(x), ct>; its gradient comes from
    nested `grad` placeholders and is checked by central differences of loss2, which is
    itself evaluated with the (first-order checked) derived gradient graph.
    """
    arrays = [np.asarray(a, np.float64) for a in arrays]
    ct = rng.standard_normal(run_ref(op, arrays, attrs).shape)
    cs = [rng.standard_normal(a.shape) for a in arrays]
    b = GraphBuilder("second_order")
    ins = [b.add_input(f"x{i}", TensorType(a.shape, F64)) for i, a in enumerate(arrays)]
    out = b.emit(op, ins, attrs)
    ctn = b.emit("constant", [], {"value": ct})
    loss1 = b.reduce_sum(b.mul(out, ctn), axes=tuple(range(out.type.rank)))
    terms = []
    for x, c in zip(ins, cs, strict=True):
        g = b.grad(loss1, x)
        cn = b.emit("constant", [], {"value": c})
        terms.append(b.reduce_sum(b.mul(g, cn), axes=tuple(range(g.type.rank))))
    loss2 = terms[0]
    for term in terms[1:]:
        loss2 = b.add(loss2, term)
    graph = derive_backward(b.build([b.grad(loss2, x) for x in ins]))
    grads = interpret(graph, arrays)

    def loss2_of(xs: list[np.ndarray]) -> float:
        return float(sum(np.sum(g * c) for g, c in zip(vjp(op, xs, attrs, ct), cs, strict=True)))

    for i, g in enumerate(grads):
        n = arrays[i].size
        coords = np.arange(n) if n <= max_coords else rng.choice(n, max_coords, replace=False)
        expect = []
        for flat in coords:
            xs = [a.copy() for a in arrays]
            xs[i].reshape(-1)[flat] += eps
            up = loss2_of(xs)
            xs[i].reshape(-1)[flat] -= 2 * eps
            expect.append((up - loss2_of(xs)) / (2 * eps))
        np.testing.assert_allclose(
            g.reshape(-1)[coords],
            expect,
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"second-order gradient of {op} w.r.t. input {i}",
        )
