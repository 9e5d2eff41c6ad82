"""Target detection, the JIT (object emission and reload) and the IR helpers of codegen/."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen import jit
from graphc.codegen.target import get_target, host_target

# ---- target -----------------------------------------------------------------------------------


def test_host_target_describes_this_cpu():
    t = get_target("host")
    assert t.triple == llvm.get_process_triple()
    assert t.vector_bits in (128, 256, 512) and t.f32_lanes == t.vector_bits // 32
    assert t.lanes("float64") == t.f32_lanes // 2
    if "+avx512f" in t.features:
        assert t.vector_bits == 512 and t.vector_registers == 32
        # Intel tunings prefer 256-bit vectors unless told otherwise
        assert "-prefer-256-bit" in t.features
        assert t.function_attributes["prefer-vector-width"] == "512"


@pytest.mark.parametrize("kind, bits", [("avx2", 256), ("generic", 128)])
def test_narrower_targets(kind, bits):
    host = get_target("host")
    if kind == "avx2" and host.vector_bits < 256:
        pytest.skip("no AVX2 on this machine")
    t = get_target(kind)
    assert t.vector_bits == bits and t.vector_registers == 16
    assert t.cache_key() != host.cache_key()


def test_env_var_override(monkeypatch):
    monkeypatch.setenv("GRAPHC_TARGET", "generic")
    assert host_target().kind == "generic"
    monkeypatch.setenv("GRAPHC_TARGET", "pentium")
    with pytest.raises(ValueError, match="GRAPHC_TARGET"):
        host_target()
    monkeypatch.delenv("GRAPHC_TARGET")
    assert host_target().kind == "host"


def test_target_machines_are_fresh_and_usable():
    t = get_target("host")
    tm1, tm2 = t.target_machine(), t.target_machine()
    assert tm1 is not tm2 and tm1.triple == t.triple


# ---- a small kernel exercising the helpers -------------------------------------------


def _axpy_module(target) -> ir.Module:
    """out[i] = relu(out[i] + 2 x[i]) for i < n (vector loop + masked tail); out[n] = sum x."""
    m = ir.Module()
    fn = ir.Function(m, ir.FunctionType(U.VOID, [U.PTR, U.PTR]), "axpy")
    for a in fn.args:
        a.add_attribute("noalias")
    U.set_fn_attrs(fn, target.function_attributes)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    out, x = fn.args
    lanes, n = target.f32_lanes, 37
    vt = U.vec(U.F32, lanes)
    two = U.splat(b, ir.Constant(U.F32, 2.0), lanes)
    total = U.entry_alloca(b, vt, "total")
    b.store(ir.Constant(vt, None), total)

    def body(off, active):
        xv = U.load_vec(b, U.gep(b, x, U.F32, off), vt, active)
        ov = U.load_vec(b, U.gep(b, out, U.F32, off), vt, active)
        U.store_vec(b, U.relu(b, U.fmuladd(b, xv, two, ov)), U.gep(b, out, U.F32, off), active)
        b.store(b.fadd(b.load(total, typ=vt), xv), total)

    with U.for_range(b, 0, n // lanes, name="v", hints=U.NO_UNROLL) as i:
        body(b.mul(i, U.i64(lanes)), None)
    body(U.i64(n - n % lanes), n % lanes)
    b.store(U.hsum(b, b.load(total, typ=vt)), U.gep(b, out, U.F32, n))
    b.ret_void()
    return m


def _check_axpy(address: int) -> None:
    rng = np.random.default_rng(0)
    x, out = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    want = out.copy()
    want[:37] = np.maximum(out[:37] + 2 * x[:37], 0)
    want[37] = x[:37].sum()
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(address)
    f(out.ctypes.data, x.ctypes.data)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["host", "avx2", "generic"])
def test_compile_and_call(kind):
    t = get_target(kind)
    m = _axpy_module(t)
    text = str(m)
    assert "distinct !{" in text and "llvm.loop.unroll.disable" in text
    assert '"no-trapping-math"="true"' in text
    lib = jit.compile_module(m, t)
    assert lib.times.total > 0 and "optimize" in str(lib.times)
    _check_axpy(lib.address("axpy"))


def test_wide_vectors_on_avx512_hosts():
    t = get_target("host")
    if t.vector_bits != 512:
        pytest.skip("not an AVX-512 host")
    asm = jit.emit_assembly(_axpy_module(t), t)
    assert "zmm" in asm and "vfmadd" in asm


def test_object_reload_in_this_and_a_fresh_process(tmp_path):
    t = get_target("host")
    obj = jit.emit_object(_axpy_module(t), t)
    lib = jit.load_object(obj, ["axpy"])  # the code lives as long as `lib`
    _check_axpy(lib.address("axpy"))
    path = tmp_path / "axpy.o"
    path.write_bytes(obj)
    code = (
        "import sys, ctypes, numpy as np\n"
        "from graphc.codegen import jit\n"
        f"lib = jit.load_object(open({str(path)!r}, 'rb').read(), ['axpy'])\n"
        "x = np.arange(40, dtype=np.float32); out = np.zeros(40, np.float32)\n"
        "f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(lib.address('axpy'))\n"
        "f(out.ctypes.data, x.ctypes.data); print(out[3], out[37])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["6.0", str(float(sum(range(37))))]


def test_missing_symbol_is_an_error_not_a_crash():
    m = ir.Module()
    ext = ir.Function(m, ir.FunctionType(U.VOID, []), "graphc_no_such_symbol")
    fn = ir.Function(m, ir.FunctionType(U.VOID, []), "calls_missing")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.call(ext, [])
    b.ret_void()
    with pytest.raises(jit.JitError, match="graphc_no_such_symbol"):
        jit.compile_module(m)


def test_invalid_ir_is_an_error():
    with pytest.raises(jit.JitError, match="rejected"):
        jit.parse("define void @f() { ret i32 0 }")


def test_unknown_export_is_a_key_error():
    t = get_target("host")
    lib = jit.compile_module(_axpy_module(t), t)
    with pytest.raises(KeyError, match="axpy"):
        lib.address("nope")


# ---- helpers in isolation -----------------------------------------------------------------------


def _vector_fn(name: str, lanes: int, count: int, build) -> ctypes._CFuncPtr:
    """Compile `void name(float *out, float *in)` whose body is build(b, vectors) -> vectors."""
    t = get_target("host")
    m = ir.Module()
    fn = ir.Function(m, ir.FunctionType(U.VOID, [U.PTR, U.PTR]), name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vt = U.vec(U.F32, lanes)
    vs = [U.load_vec(b, U.gep(b, fn.args[1], U.F32, i * lanes), vt) for i in range(count)]
    for i, v in enumerate(build(b, vs)):
        b.store(v, U.gep(b, fn.args[0], U.F32, i * v.type.count), align=4)
    b.ret_void()
    lib = jit.compile_module(m, t)
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(lib.address(name))
    f.lib = lib  # keep the code alive
    return f


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_transpose_square(lanes):
    f = _vector_fn("tr", lanes, lanes, lambda b, vs: U.transpose_square(b, vs))
    a = np.arange(lanes * lanes, dtype=np.float32).reshape(lanes, lanes)
    out = np.zeros_like(a)
    f(out.ctypes.data, a.ctypes.data)
    assert np.array_equal(out, a.T)


@pytest.mark.parametrize("count", [1, 2, 4, 8, 16])
def test_lane_sums(count):
    f = _vector_fn("ls", 16, count, lambda b, vs: [U.lane_sums(b, vs)])
    a = np.random.default_rng(0).standard_normal((count, 16)).astype(np.float32)
    out = np.zeros(count, np.float32)
    f(out.ctypes.data, a.ctypes.data)
    np.testing.assert_allclose(out, a.sum(axis=1), rtol=1e-5, atol=1e-5)
