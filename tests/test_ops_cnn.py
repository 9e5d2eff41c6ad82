"""Case tables for the CNN functions of nn.functional: conv_transpose2d, interpolate, pad,
adaptive pooling, group_norm and instance_norm (compositions of primitives, see
graphc/nn/functional_*.py).

Each case goes through
- PyTorch as the oracle, in float64: output shape (and, for conv_transpose2d, PyTorch's
  documented output-size formula computed here), values, and the gradients of
  sum(out * cotangent) w.r.t. every input;
- the VJP against float64 central finite differences of graphc's own forward;
- native code against the reference interpreter, on the compiled forward and backward,
  one compiled step per family of cases (one native compile each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

import graphc
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import interpreter_executable


@dataclass(frozen=True)
class FnCase:
    family: str
    fn: str  # the nn.functional name, the same in both frameworks
    shapes: tuple[tuple[int, ...], ...]  # the tensor arguments, in order
    kwargs: dict = field(default_factory=dict)
    args: tuple = ()  # positional non-tensor arguments after the tensors

    @property
    def id(self) -> str:
        shapes = ",".join("x".join(map(str, s)) for s in self.shapes)
        extra = ",".join(map(str, self.args)) + ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.fn}({shapes};{extra})"

    def call(self, F, *tensors):
        return getattr(F, self.fn)(*tensors, *self.args, **self.kwargs)


def _convt(x, w, bias=True, **kw):
    shapes = (x, w, (w[1] * kw.get("groups", 1),)) if bias else (x, w)
    return FnCase("conv_transpose2d", "conv_transpose2d", shapes, kw)


CONV_T = [
    _convt((2, 3, 5, 7), (3, 4, 3, 3)),
    _convt((1, 4, 4, 5), (4, 3, 3, 2), stride=2, padding=1, output_padding=1),
    _convt((2, 4, 3, 3), (4, 2, 3, 3), stride=2, output_padding=1, groups=2),
    _convt((1, 2, 4, 4), (2, 3, 3, 3), stride=3, padding=2, output_padding=2, dilation=2),
    # output_padding at least the stride (allowed by the dilation): rows no cotangent reaches
    _convt((1, 2, 5, 4), (2, 2, 3, 3), padding=1, output_padding=1, dilation=2),
    _convt((2, 6, 3, 4), (6, 1, 3, 3), stride=2, padding=1, output_padding=1, groups=6),
    _convt((1, 3, 4, 4), (3, 5, 4, 4), bias=False, stride=2, padding=1),  # DCGAN's upsampler
    _convt((1, 2, 3, 3), (2, 2, 1, 1)),
    _convt((1, 2, 3, 4), (2, 3, 2, 3), stride=(2, 3), padding=(1, 0), output_padding=(1, 2)),
    _convt((1, 2, 3, 3), (2, 2, 3, 3), padding=2),  # padding beyond the kernel: no stride-1 form
]

INTERPOLATE = [
    FnCase("interpolate", "interpolate", ((2, 3, 5, 6),), kw)
    for kw in (
        dict(scale_factor=2),
        dict(scale_factor=3),
        dict(size=(7, 9)),
        dict(scale_factor=1.5),
        dict(size=(3, 2)),
        dict(scale_factor=0.5),
        dict(scale_factor=(2, 1)),
        dict(scale_factor=1.5, recompute_scale_factor=True),
        dict(scale_factor=2, mode="bilinear"),
        dict(scale_factor=2, mode="bilinear", align_corners=True),
        dict(size=(7, 11), mode="bilinear"),
        dict(size=(7, 11), mode="bilinear", align_corners=True),
        dict(size=(3, 2), mode="bilinear"),
        dict(size=(3, 2), mode="bilinear", align_corners=True),
        dict(size=(1, 1), mode="bilinear", align_corners=True),
        dict(scale_factor=1.7, mode="bilinear"),
        dict(scale_factor=(0.5, 2.5), mode="bilinear"),
    )
] + [
    FnCase("interpolate", "interpolate", ((2, 3, 5),), dict(size=8)),
    FnCase("interpolate", "interpolate", ((2, 3, 5),), dict(size=9, mode="linear")),
    FnCase("interpolate", "interpolate", ((2, 3, 5),),
           dict(size=4, mode="linear", align_corners=True)),
]  # fmt: skip

PAD = [
    FnCase("pad", "pad", ((2, 3, 5, 6),), dict(pad=p, mode=m, **({"value": v} if v else {})))
    for p, m, v in (
        ((1, 2, 3, 0), "constant", None),
        ((1, 2, 3, 0), "constant", 1.5),
        ((1, -1, 0, 2), "constant", None),
        ((1, 1, 0, 0, 2, 1), "constant", None),
        ((2, 1, 1, 2), "reflect", None),
        ((2, 1, 1, 2), "replicate", None),
        ((2, 1, 1, 2), "circular", None),
        ((4, 5, 3, 4), "reflect", None),
    )
] + [
    FnCase("pad", "pad", ((2, 3, 5),), dict(pad=(2, 3), mode="reflect")),
    FnCase("pad", "pad", ((2, 3, 5),), dict(pad=(3, 1), mode="replicate")),
]

ADAPTIVE = [
    FnCase("adaptive", fn, ((2, 3, 5, 6),), args=(size,))
    for fn in ("adaptive_max_pool2d", "adaptive_avg_pool2d")
    for size in ((1, 1), (5, 3), (2, 3), (3, 4), (4, None))
]

NORM = [FnCase("norm", "group_norm", ((2, 4, 5, 6), (4,), (4,)), args=(g,)) for g in (1, 2, 4)] + [
    FnCase("norm", "group_norm", ((3, 6, 7),), args=(3,)),
    FnCase("norm", "group_norm", ((2, 4, 3, 3), (4,), (4,)), args=(2,), kwargs=dict(eps=0.1)),
    FnCase("norm", "instance_norm", ((2, 4, 5, 6),)),
    FnCase("norm", "instance_norm", ((3, 2, 7),)),
]

CASES = CONV_T + INTERPOLATE + PAD + ADAPTIVE + NORM
IDS = [c.id for c in CASES]


def _apply(case: FnCase, F, tensors):
    if case.fn == "group_norm":
        x, *affine = tensors
        return F.group_norm(x, *case.args, *affine, **case.kwargs)
    return case.call(F, *tensors)


def _inputs(case: FnCase, rng, dtype=np.float64) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(dtype) for s in case.shapes]


def _torch_run(torch, case: FnCase, arrays, cotangent=None):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = _apply(case, torch.nn.functional, ts)
    if cotangent is None:
        return out.detach().numpy(), None
    (out * torch.tensor(cotangent)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _graphc_run(case: FnCase, arrays, cotangent):
    ts = [graphc.tensor(a, requires_grad=True) for a in arrays]
    out = _apply(case, graphc.nn.functional, ts)
    (out * graphc.tensor(cotangent)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _conv_transpose_size(case: FnCase) -> tuple[int, ...]:
    """PyTorch's documented ConvTranspose2d output size, written out here."""
    (n, _, h, w), (_, og, kh, kw) = case.shapes[:2]

    def pair(name, default):
        v = case.kwargs.get(name, default)
        return (v, v) if isinstance(v, int) else v

    s, p, op, d = (pair(k, v) for k, v in (("stride", 1), ("padding", 0),
                                           ("output_padding", 0), ("dilation", 1)))  # fmt: skip
    sizes = [(size - 1) * s[i] - 2 * p[i] + d[i] * (k - 1) + op[i] + 1
             for i, (size, k) in enumerate(((h, kh), (w, kw)))]  # fmt: skip
    return (n, og * case.kwargs.get("groups", 1), *sizes)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_and_gradients_match_torch(case, torch, rng):
    arrays = _inputs(case, rng)
    want, _ = _torch_run(torch, case, arrays)
    if case.family == "conv_transpose2d":
        assert want.shape == _conv_transpose_size(case)
    cotangent = rng.standard_normal(want.shape)
    want, want_grads = _torch_run(torch, case, arrays, cotangent)
    got, grads = _graphc_run(case, arrays, cotangent)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for i, (g, w) in enumerate(zip(grads, want_grads, strict=True)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"gradient {i}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_matches_finite_differences(case, rng):
    arrays = _inputs(case, rng)
    shape = _apply(case, graphc.nn.functional, [graphc.tensor(a) for a in arrays]).shape
    cotangent = rng.standard_normal(shape)
    _, grads = _graphc_run(case, arrays, cotangent)

    def loss(xs):
        value = _apply(case, graphc.nn.functional, [graphc.tensor(x) for x in xs])
        return float(np.sum(value.numpy() * cotangent))

    eps = 1e-6
    for i, a in enumerate(arrays):
        coords = rng.choice(a.size, min(a.size, 12), replace=False)
        for flat in coords:
            up, down = [x.copy() for x in arrays], [x.copy() for x in arrays]
            up[i].reshape(-1)[flat] += eps
            down[i].reshape(-1)[flat] -= eps
            expect = (loss(up) - loss(down)) / (2 * eps)
            got = grads[i].reshape(-1)[flat]
            assert abs(got - expect) <= 1e-6 + 1e-5 * abs(expect), (i, flat, got, expect)


FAMILIES = sorted({c.family for c in CASES})


@pytest.mark.parametrize("family", FAMILIES)
def test_native_matches_the_interpreter(family, rng):
    """Every case of a family in one compiled step (forward and backward), run natively
    and by the reference interpreter on the same optimised graph."""
    cases = [c for c in CASES if c.family == family]
    counts = [len(c.shapes) for c in cases]

    def step(*flat):
        outs, at = [], 0
        for c, k in zip(cases, counts, strict=True):
            ins, cot = flat[at : at + k], flat[at + k]
            out = _apply(c, graphc.nn.functional, ins)
            (out * cot).sum().backward()
            outs.append(out)
            at += k + 1
        return tuple(outs)

    flat = []
    for c in cases:
        arrays = _inputs(c, rng, np.float32)
        shape = _apply(c, graphc.nn.functional, [graphc.tensor(a) for a in arrays]).shape
        flat += arrays + [rng.standard_normal(shape).astype(np.float32)]

    def run(backend):
        ts = [graphc.tensor(a, requires_grad=True) for a in flat]
        outs = graphc.compile(step, backend=backend)(*ts)
        grads = [t.grad.numpy() for t in ts if t.grad is not None]
        return [o.numpy() for o in outs] + grads

    native = run(native_executable)
    reference = run(interpreter_executable)
    assert len(native) == len(reference)
    for got, want in zip(native, reference, strict=True):
        scale = 1 + float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
