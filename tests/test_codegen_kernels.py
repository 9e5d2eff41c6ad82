"""Contraction kernels (codegen/kernels) against the numpy references of graphc.ops.

Kernels are emitted into one module per table and compiled once per test module (compiling
dominates the run time). Every case runs the whole range of units and, separately, a split
of the units that must give bitwise the same result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llvmlite import ir

from graphc.codegen import jit
from graphc.codegen.kernels import (
    KernelSpec,
    emit_conv2d,
    emit_conv2d_input_grad,
    emit_conv2d_weight_grad,
    emit_matmul,
    run_kernel,
)
from graphc.codegen.target import get_target
from graphc.ops import OPS
from graphc.passes.conv_tiles import conv_geometry
from graphc.passes.tiling import STACK_LIMIT_BYTES

# ---- cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    """One kernel: how to emit it, and how to build its inputs and expected output."""

    op: str
    kw: dict
    dtype: str = "float32"
    generic: bool = False
    spec: KernelSpec | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        shapes = [v for k, v in self.kw.items() if k.endswith("shape")]
        extra = [k for k in ("bias", "relu", "accumulate", "blocked") if self.kw.get(k)]
        flags = [f"{k}={v}" for k, v in self.kw.items() if k in ("trans_a", "trans_b") and v]
        attrs = [f"{k}={v}" for k, v in self.kw.items() if k in CONV_KEYS and v != DEFAULTS[k]]
        gen = ["generic"] if self.generic else []
        parts = [self.op, self.dtype, *map(str, shapes), *flags, *attrs, *extra, *gen]
        return " ".join(parts).replace(" ", "")


CONV_KEYS = ("stride", "padding", "dilation", "groups")
DEFAULTS = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


def conv_cases(x_shape, w_shape, dtype="float32", generic=False, plain=False, **attrs):
    """conv2d (+bias+relu; also without them if `plain`), its input gradient and its weight
    gradient for one geometry."""
    a = {
        **DEFAULTS,
        **{k: (v, v) if isinstance(v, int) and k != "groups" else v for k, v in attrs.items()},
    }
    geo = conv_geometry(x_shape, w_shape, a["stride"], a["padding"], a["dilation"], a["groups"])
    g_shape = (geo.n, geo.o, geo.oh, geo.ow)
    common = dict(dtype=dtype, generic=generic)
    plain_case = [Case("conv2d", dict(x_shape=x_shape, w_shape=w_shape, **a), **common)]
    return (plain_case if plain else []) + [
        Case("conv2d", dict(x_shape=x_shape, w_shape=w_shape, bias=True, relu=True, **a), **common),
        Case(
            "conv2d_input_grad",
            dict(g_shape=g_shape, w_shape=w_shape, input_shape=x_shape, **a),
            **common,
        ),
        Case(
            "conv2d_weight_grad",
            dict(x_shape=x_shape, g_shape=g_shape, weight_shape=w_shape, **a),
            **common,
        ),
    ]


def matmul_case(batch, m, k, n, ta, tb, dtype="float32", generic=False, **flags) -> Case:
    a_shape = batch + ((k, m) if ta else (m, k))
    b_shape = batch + ((n, k) if tb else (k, n))
    kw = dict(a_shape=a_shape, b_shape=b_shape, trans_a=ta, trans_b=tb, **flags)
    return Case("matmul", kw, dtype, generic)


TRANS = list(itertools.product([False, True], repeat=2))

# The cache-blocked schedule, forced on small shapes: k longer than one k block (several
# blocks, partial sums on the stack) with a tail that is not a multiple of the vector width,
# n spanning several strips with a short last one, m not a multiple of the register tile,
# several row blocks (m=203 at k=530), and the epilogues.
BLOCKED_CASES = [
    matmul_case((2,), 37, 530, 53, ta, tb, bias=True, relu=True, accumulate=True, blocked=True)
    for ta, tb in TRANS[:3]
] + [
    matmul_case((), 203, 530, 150, False, True, bias=True, blocked=True),
    matmul_case((), 203, 300, 150, True, False, blocked=True),
    matmul_case((), 70, 5, 33, False, True, relu=True, blocked=True),  # k < one vector
    matmul_case((3,), 9, 17, 100, False, False, accumulate=True, blocked=True),
    matmul_case((), 1, 1, 1, False, True, blocked=True),
]

MATMUL_CASES = (
    [matmul_case((), 64, 400, 120, False, True, bias=True, relu=True)]  # fc1 forward
    + [matmul_case((), 64, 120, 400, False, False), matmul_case((), 120, 64, 400, True, False)]
    + [matmul_case((2,), 13, 17, 33, ta, tb) for ta, tb in TRANS]  # batched, ragged
    + [matmul_case((3, 2), 5, 20, 9, ta, tb, bias=True, accumulate=True) for ta, tb in TRANS]
    + [matmul_case((), 7, 5, 3, ta, tb, relu=True) for ta, tb in TRANS]
    + [matmul_case((), 1, 1, 1, False, False), matmul_case((), 70, 3, 16, True, True)]
    + [matmul_case((2,), 9, 6, 11, ta, tb, "float64", bias=True) for ta, tb in TRANS]
    + [matmul_case((), 6, 10, 5, True, False, generic=True, bias=True, relu=True, accumulate=True)]
    + BLOCKED_CASES
)

# output channels whose 64x3x3 float32 weights outgrow half the stack limit, wherever it is set
BIG_O = STACK_LIMIT_BYTES // 2 // (64 * 3 * 3 * 4) + 32

CONV_CASES = (
    conv_cases((2, 3, 32, 32), (6, 3, 5, 5), plain=True)  # conv1 of the reference network
    + conv_cases((2, 6, 14, 14), (16, 6, 5, 5), plain=True)  # conv2
    + conv_cases((2, 4, 9, 11), (6, 4, 3, 3), padding=1)
    + conv_cases((2, 4, 9, 11), (6, 2, 3, 3), stride=2, padding=1, groups=2)
    + conv_cases((1, 3, 7, 20), (5, 3, 3, 2), padding=(2, 1), dilation=(2, 1))
    + conv_cases((1, 8, 6, 40), (20, 4, 3, 3), padding=1, groups=2)
    + conv_cases((1, 2, 40, 3), (33, 2, 3, 3), stride=(2, 1), padding=3, dilation=(1, 2))
    + conv_cases((3, 1, 4, 4), (2, 1, 4, 4))  # the kernel covers the whole image
    + conv_cases((2, 2, 5, 5), (3, 2, 1, 1))  # 1x1
    + conv_cases((1, 2, 5, 150), (3, 2, 3, 3), padding=1)  # rows wider than a column tile
    + conv_cases((1, 3, 12, 12), (40, 3, 3, 3), padding=1)  # several channel blocks
    + conv_cases((1, 64, 4, 4), (64, 64, 3, 3), padding=1)  # weight-grad units in chunks
    + conv_cases((2, 3, 8, 8), (4, 3, 3, 3), "float64", plain=True, padding=1)
    + conv_cases((1, 4, 7, 9), (6, 2, 3, 3), "float64", stride=2, padding=1, dilation=2, groups=2)
    + conv_cases((2, 3, 9, 10), (5, 3, 3, 3), generic=True, padding=1)
    # conv2d_input_grad by output phase (stride > 1): a ResNet downsampling block, its 1x1
    # shortcut, three and four column phases, and phase rows of several vectors
    + conv_cases((2, 8, 18, 17), (12, 8, 3, 3), stride=2, padding=1)
    + conv_cases((2, 16, 8, 8), (32, 16, 1, 1), stride=2)
    + conv_cases((1, 3, 11, 40), (4, 3, 3, 3), stride=3, padding=1)
    + conv_cases((1, 3, 20, 37), (5, 3, 5, 5), stride=(2, 4), padding=2)
    + conv_cases((1, 2, 5, 100), (3, 2, 3, 3), stride=2, padding=1)
    # weights too large to pack at once (64 input channels, more outputs than half the
    # stack holds): packed per channel tile
    + conv_cases((2, 64, 8, 7), (BIG_O, 64, 3, 3), stride=2, padding=1)
    # depthwise (one filter per channel): narrow planes, a short last block of channels,
    # strides (the input gradient scattered where the plane is narrow, by phase where it is
    # wide), dilation, a rectangular kernel, padding beyond the kernel, a 2x2 plane
    + conv_cases((2, 20, 7, 7), (20, 1, 3, 3), padding=1, groups=20)
    + conv_cases((2, 16, 9, 8), (16, 1, 3, 3), stride=2, padding=1, groups=16)
    + conv_cases((1, 40, 20, 35), (40, 1, 3, 3), stride=2, padding=1, groups=40)
    + conv_cases((2, 18, 5, 6), (18, 1, 5, 3), padding=(2, 1), dilation=(1, 2), groups=18)
    + conv_cases((1, 17, 4, 7), (17, 1, 2, 2), stride=(1, 2), groups=17)
    + conv_cases((1, 16, 5, 5), (16, 1, 3, 3), padding=3, groups=16)
    + conv_cases((3, 32, 2, 2), (32, 1, 3, 3), padding=1, groups=32)
)

EMIT = {
    "matmul": emit_matmul,
    "conv2d": emit_conv2d,
    "conv2d_input_grad": emit_conv2d_input_grad,
    "conv2d_weight_grad": emit_conv2d_weight_grad,
}


def emit(module: ir.Module, name: str, case: Case, target) -> KernelSpec:
    return EMIT[case.op](
        module, name, dtype=case.dtype, target=target, generic=case.generic, **case.kw
    )


def compile_cases(cases: list[Case], target) -> jit.JitLibrary:
    module = ir.Module()
    for i, case in enumerate(cases):
        case.spec = emit(module, f"k{i}", case, target)
    return jit.compile_module(module, target)


# ---- running against the references ---------------------------------------------------------


def inputs_and_reference(case: Case, rng) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(inputs in kernel argument order, initial output buffer, expected output)."""
    dt = np.dtype(case.dtype)

    def r(shape):
        return rng.standard_normal(shape).astype(dt)

    kw = case.kw
    if case.op == "matmul":
        a, b = r(kw["a_shape"]), r(kw["b_shape"])
        ref = OPS["matmul"].ref(a, b, trans_a=kw["trans_a"], trans_b=kw["trans_b"])
        ins = [a, b]
        if kw.get("bias"):
            bias = r(ref.shape[-1])
            ins.append(bias)
            ref = ref + bias
        if kw.get("relu"):
            ref = np.maximum(ref, 0)
        out = r(ref.shape) if kw.get("accumulate") else np.full(ref.shape, np.nan, dt)
        if kw.get("accumulate"):
            ref = out + ref
        return ins, out, ref
    if case.op == "conv2d":
        ins = [r(kw["x_shape"]), r(kw["w_shape"])]
        if kw.get("bias"):
            ins.append(r(kw["w_shape"][0]))
    elif case.op == "conv2d_input_grad":
        ins = [r(kw["g_shape"]), r(kw["w_shape"])]
    else:
        ins = [r(kw["x_shape"]), r(kw["g_shape"])]
    ref = conv_reference(case, ins)
    return ins, np.full(ref.shape, np.nan, dt), ref


def conv_reference(case: Case, ins: list[np.ndarray]) -> np.ndarray:
    """The expected output of a conv kernel case on inputs in kernel argument order."""
    kw = case.kw
    attrs = {k: kw[k] for k in CONV_KEYS if k in kw}
    with np.errstate(invalid="ignore"):
        if case.op == "conv2d":
            ref = OPS["conv2d"].ref(ins[0], ins[1], **attrs)
            if kw.get("bias"):
                ref = ref + ins[2][None, :, None, None]
            return np.maximum(ref, 0) if kw.get("relu") else ref
        if case.op == "conv2d_input_grad":
            return OPS[case.op].ref(*ins, input_shape=kw["input_shape"], **attrs)
        return OPS[case.op].ref(*ins, weight_shape=kw["weight_shape"], **attrs)


def check_case(lib: jit.JitLibrary, case: Case, rng) -> None:
    spec = case.spec
    addr = lib.address(spec.name)
    ins, out0, ref = inputs_and_reference(case, rng)
    out = out0.copy()
    run_kernel(addr, spec, out, *ins)
    tol = 1e-5 if case.dtype == "float32" else 1e-12
    scale = 1.0 + np.abs(ref).max()  # sums of many terms: error relative to the magnitude
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol * scale * 4)
    assert_any_split_matches(addr, spec, out0, ins, out, "")


def assert_any_split_matches(addr, spec, out0, ins, out, what: str) -> None:
    """Any split of the work units (run from the initial `out0`) gives bitwise `out`."""
    extent = spec.parallel_extent
    for k in sorted({1, extent // 2, extent - 1}):
        if 0 < k < extent:
            part = out0.copy()
            run_kernel(addr, spec, part, *ins, lo=0, hi=k)
            run_kernel(addr, spec, part, *ins, lo=k, hi=extent)
            assert np.array_equal(part, out, equal_nan=True), f"split at {k} differs {what}"


# ---- the host target --------------------------------------------------------------------------

HOST_CASES = MATMUL_CASES + CONV_CASES


@pytest.fixture(scope="module")
def host_lib():
    return compile_cases(HOST_CASES, get_target("host"))


@pytest.mark.parametrize("case", HOST_CASES, ids=lambda c: c.id)
def test_kernel_matches_reference(host_lib, case, rng):
    check_case(host_lib, case, rng)


def test_specs_describe_the_schedule(host_lib):
    fc1, conv1 = HOST_CASES[0].spec, CONV_CASES[1].spec
    assert fc1.args == ("out", "a", "b", "bias") and fc1.flops == 2 * 64 * 400 * 120
    assert "dot-product" in fc1.schedule and fc1.vector_lanes == get_target("host").f32_lanes
    assert conv1.args == ("out", "x", "w", "bias") and conv1.parallel_extent == 2
    assert conv1.flops == 2 * 2 * 6 * 28 * 28 * 3 * 25
    assert "relu" in conv1.schedule and "x" in conv1.describe()
    generic = [c.spec for c in HOST_CASES if c.generic or c.dtype == "float64"]
    assert generic and all(s.vector_lanes == 1 and "generic" in s.schedule for s in generic)


def test_both_vector_schedules_are_covered(host_lib):
    """The case table exercises every vector schedule of every conv kernel."""
    text = " | ".join(c.spec.schedule for c in CONV_CASES if c.op != "conv2d_weight_grad")
    assert "width schedule" in text and "channel schedule" in text
    wgrad = " | ".join(c.spec.schedule for c in CONV_CASES if c.op == "conv2d_weight_grad")
    assert "width schedule" in wgrad and "channel schedule" in wgrad
    dx = " | ".join(c.spec.schedule for c in CONV_CASES if c.op == "conv2d_input_grad")
    assert "taps gathered" in dx and "taps scattered" in dx and "phase schedule" in dx
    assert "depthwise schedule" in text and "depthwise schedule" in wgrad
    assert "packed per call" in text and "packed per channel tile" in text
    mm = " | ".join(c.spec.schedule for c in MATMUL_CASES)
    assert "outer-product" in mm and "dot-product" in mm and "out^T" in mm
    blocked = [c.spec for c in BLOCKED_CASES]
    assert all("cache-blocked" in s.schedule for s in blocked)
    assert any(", k blocks of" in s.schedule and "(1 per unit)" not in s.schedule for s in blocked)
    assert any(s.parallel_extent > 2 for s in blocked)


def test_blocked_units_in_any_order_and_threads_are_bitwise_equal(host_lib, rng):
    """The blocked schedule's units run as one call, as single units in reverse order, and
    as two halves on two threads at once (scratch on each caller's stack) give the same
    bytes."""
    from concurrent.futures import ThreadPoolExecutor

    for case in BLOCKED_CASES:
        spec, addr = case.spec, host_lib.address(case.spec.name)
        ins, out0, _ = inputs_and_reference(case, rng)
        whole, pieces, halves = out0.copy(), out0.copy(), out0.copy()
        run_kernel(addr, spec, whole, *ins)
        extent = spec.parallel_extent
        for u in reversed(range(extent)):
            run_kernel(addr, spec, pieces, *ins, lo=u, hi=u + 1)
        mid = extent // 2
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(run_kernel, addr, spec, halves, *ins, lo=lo, hi=hi)
                for lo, hi in ((mid, extent), (0, mid))
            ]
            for job in jobs:
                job.result()
        assert whole.tobytes() == pieces.tobytes() == halves.tobytes(), case.id


def test_large_matmuls_choose_the_blocked_schedule():
    """The MLP's large products get the blocked schedule within the stack budget; the
    reference ConvNet's small ones keep the unblocked schedules."""
    from graphc.passes.tiling import STACK_LIMIT_BYTES

    t = get_target("host")
    big = [((256, 3072), (512, 3072), False, True), ((256, 512), (256, 3072), True, False)]
    small = [((64, 400), (120, 400), False, True), ((64, 120), (64, 400), True, False)]
    for i, (a, b, ta, tb) in enumerate(big + small):
        spec = emit_matmul(
            ir.Module(),
            f"m{i}",
            a_shape=a,
            b_shape=b,
            trans_a=ta,
            trans_b=tb,
            dtype="float32",
            target=t,
        )
        assert ("cache-blocked" in spec.schedule) == (i < len(big)), spec.schedule
        assert spec.stack_bytes <= STACK_LIMIT_BYTES
        assert i >= len(big) or spec.parallel_extent >= 4


def test_concurrent_calls_on_disjoint_units(host_lib, rng):
    """Two threads running halves of the units at once (kernels keep their scratch on the
    stack, nothing global) give bitwise the single-call result."""
    from concurrent.futures import ThreadPoolExecutor

    for case in HOST_CASES:
        if case.op == "matmul" or case.dtype != "float32" or case.spec.parallel_extent < 2:
            continue
        spec, addr = case.spec, host_lib.address(case.spec.name)
        ins, out0, _ = inputs_and_reference(case, rng)
        whole, halves = out0.copy(), out0.copy()
        run_kernel(addr, spec, whole, *ins)
        mid = spec.parallel_extent // 2
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(run_kernel, addr, spec, halves, *ins, lo=lo, hi=hi)
                for lo, hi in ((0, mid), (mid, spec.parallel_extent))
            ]
            for job in jobs:
                job.result()
        assert np.array_equal(whole, halves, equal_nan=True), case.id


def _poisoned(a: np.ndarray, value: float, rng) -> np.ndarray:
    """a with `value` at an element of its first or last row and at one anywhere."""
    a = a.copy()
    at = [int(rng.integers(d)) for d in a.shape]
    at[2] = int(rng.choice([0, a.shape[2] - 1]))
    a[tuple(at)] = value
    a[tuple(int(rng.integers(d)) for d in a.shape)] = value
    return a


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.id)
def test_conv_nonfinite_inputs_give_the_references_nan_and_inf(host_lib, case, rng):
    """inf or NaN in either operand: the kernel's NaN, +inf and -inf are exactly the
    reference's (which multiplies the zeros of the padding: 0 * inf = NaN), finite values
    stay within rounding, and any split of the units still gives bitwise the same result."""
    spec, addr = case.spec, host_lib.address(case.spec.name)
    clean, out0, _ = inputs_and_reference(case, rng)
    tol = 1e-5 if case.dtype == "float32" else 1e-12
    for which, value in itertools.product((0, 1), (np.inf, -np.inf, np.nan)):
        ins = list(clean)
        ins[which] = _poisoned(ins[which], value, rng)
        ref = conv_reference(case, ins)
        out = out0.copy()
        run_kernel(addr, spec, out, *ins)
        what = f"input {which} holds {value}"
        for cls in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(cls(out), cls(ref), err_msg=f"{cls.__name__}, {what}")
        finite = np.isfinite(ref)
        scale = 1.0 + np.abs(ref[finite]).max(initial=0)
        np.testing.assert_allclose(out[finite], ref[finite], rtol=0, atol=tol * scale * 4)
        assert_any_split_matches(addr, spec, out0, ins, out, what)


def test_out_of_range_units_are_clamped(host_lib, rng):
    case = CONV_CASES[0]
    ins, out0, ref = inputs_and_reference(case, rng)
    out = out0.copy()
    run_kernel(host_lib.address(case.spec.name), case.spec, out, *ins, lo=-5, hi=1000)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_bad_geometry_is_refused():
    module, t = ir.Module(), get_target("host")
    with pytest.raises(ValueError, match="groups"):
        emit_conv2d(
            module,
            "bad",
            x_shape=(1, 3, 8, 8),
            w_shape=(4, 3, 3, 3),
            stride=1,
            padding=0,
            dilation=1,
            groups=2,
            dtype="float32",
            target=t,
        )
    with pytest.raises(ValueError, match="inner dimensions"):
        emit_matmul(
            module,
            "bad2",
            a_shape=(3, 4),
            b_shape=(5, 6),
            trans_a=False,
            trans_b=False,
            dtype="float32",
            target=t,
        )
    with pytest.raises(TypeError, match="float32 and float64"):
        emit_matmul(
            module,
            "bad3",
            a_shape=(3, 4),
            b_shape=(4, 6),
            trans_a=False,
            trans_b=False,
            dtype="int64",
            target=t,
        )


# ---- narrower targets through GRAPHC_TARGET's kinds ---------------------------------------------

NARROW_CASES = (
    [matmul_case((), 64, 400, 120, False, True, bias=True, relu=True)]
    + [matmul_case((2,), 13, 17, 33, ta, tb, accumulate=True) for ta, tb in TRANS]
    + [matmul_case((2,), 19, 300, 21, ta, tb, bias=True, blocked=True) for ta, tb in TRANS[:3]]
    + conv_cases((2, 3, 32, 32), (6, 3, 5, 5))
    + conv_cases((2, 6, 14, 14), (16, 6, 5, 5))
    + conv_cases((1, 4, 9, 11), (6, 2, 3, 3), stride=(1, 2), padding=1, groups=2)
)


@pytest.fixture(scope="module", params=["avx2", "generic"])
def narrow(request):
    cases = [Case(c.op, c.kw, c.dtype, c.generic) for c in NARROW_CASES]
    return cases, compile_cases(cases, get_target(request.param)), request.param


def test_narrow_targets_match_reference(narrow, rng):
    cases, lib, kind = narrow
    lanes = {"avx2": 8, "generic": 4}[kind]
    for case in cases:
        # (float64 and the forced generic cases take the scalar path)
        assert case.spec.vector_lanes == (1 if "generic" in case.spec.schedule else lanes)
        check_case(lib, case, rng)


def test_env_override_selects_target(monkeypatch):
    from graphc.codegen.target import host_target

    monkeypatch.setenv("GRAPHC_TARGET", "generic")
    t = host_target()
    spec = emit_matmul(
        ir.Module(),
        "m",
        a_shape=(4, 4),
        b_shape=(4, 4),
        trans_a=False,
        trans_b=False,
        dtype="float32",
        target=t,
    )
    assert spec.vector_lanes == 4


# ---- random geometries --------------------------------------------------------------------------


@st.composite
def conv_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 18))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 20))
    n = draw(st.integers(1, 3))
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (n, cg * groups, h, w), (og * groups, cg, kh, kw), attrs


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(geometry=conv_geometries())
def test_random_conv_geometries(geometry, rng):
    x_shape, w_shape, attrs = geometry
    cases = conv_cases(x_shape, w_shape, **attrs)
    lib = compile_cases(cases, get_target("host"))
    for case in cases:
        check_case(lib, case, rng)


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(geometry=conv_geometries(), kind=st.sampled_from(["host", "avx2"]))
def test_random_conv_geometries_more(geometry, kind, rng):
    x_shape, w_shape, attrs = geometry
    cases = conv_cases(x_shape, w_shape, **attrs)
    lib = compile_cases(cases, get_target(kind))
    for case in cases:
        check_case(lib, case, rng)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    mkn=st.tuples(st.integers(1, 40), st.integers(1, 70), st.integers(1, 40)),
    flags=st.fixed_dictionaries(
        {"bias": st.booleans(), "relu": st.booleans(), "accumulate": st.booleans()}
    ),
)
def test_random_matmuls(batch, mkn, flags, rng):
    cases = [matmul_case(batch, *mkn, ta, tb, **flags) for ta, tb in TRANS]
    lib = compile_cases(cases, get_target("host"))
    for case in cases:
        check_case(lib, case, rng)
