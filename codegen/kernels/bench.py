"""Developer benchmark of the contraction kernels on the reference workload's shapes.

    python -m graphc.codegen.kernels.bench [--batch 64 256] [--reps 15] [--only conv1.fwd,...]
                                           [--model convnet|mobilenet|autoencoder]

Single thread. Each kernel is checked against its numpy reference, then timed interleaved
with the others and with a 512^3 numpy sgemm (the command re-executes itself with
OPENBLAS_NUM_THREADS=1), round after round, so that load from other processes hits all of
them alike.
Prints per kernel: median and best wall time, median thread CPU time (robust to other
processes taking the core), GFLOP/s and % of the sgemm peak measured the same way in the
same run, GB/s of operands and result (the measure of memory-bound kernels such as
depthwise convolutions), compile time, and the schedule. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from llvmlite import ir

from graphc.codegen import jit
from graphc.codegen.kernels.common import kernel_cfunc
from graphc.codegen.kernels.conv import (
    emit_conv2d,
    emit_conv2d_input_grad,
    emit_conv2d_weight_grad,
)
from graphc.codegen.kernels.gemm import emit_matmul
from graphc.codegen.target import host_target
from graphc.ops import OPS

CONV = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)


def workload(n: int) -> list[tuple[str, str, dict]]:
    """(label, op, emitter kwargs) of the reference training step's contractions, and of the
    MLP's largest two."""
    c1x, c1w, c1y = (n, 3, 32, 32), (6, 3, 5, 5), (n, 6, 28, 28)
    c2x, c2w, c2y = (n, 6, 14, 14), (16, 6, 5, 5), (n, 16, 10, 10)
    out = [
        ("conv1.fwd", "conv2d", dict(x_shape=c1x, w_shape=c1w, bias=True, relu=True, **CONV)),
        (
            "conv1.dw",
            "conv2d_weight_grad",
            dict(x_shape=c1x, g_shape=c1y, weight_shape=c1w, **CONV),
        ),
        ("conv2.fwd", "conv2d", dict(x_shape=c2x, w_shape=c2w, bias=True, relu=True, **CONV)),
        ("conv2.dx", "conv2d_input_grad", dict(g_shape=c2y, w_shape=c2w, input_shape=c2x, **CONV)),
        (
            "conv2.dw",
            "conv2d_weight_grad",
            dict(x_shape=c2x, g_shape=c2y, weight_shape=c2w, **CONV),
        ),
    ]
    for name, k, m in (("fc1", 400, 120), ("fc2", 120, 84), ("fc3", 84, 10)):
        out += [
            (
                f"{name}.fwd",
                "matmul",
                dict(a_shape=(n, k), b_shape=(m, k), trans_a=False, trans_b=True, bias=True),
            ),
            (
                f"{name}.dx",
                "matmul",
                dict(a_shape=(n, m), b_shape=(m, k), trans_a=False, trans_b=False),
            ),
            (
                f"{name}.dw",
                "matmul",
                dict(a_shape=(n, m), b_shape=(n, k), trans_a=True, trans_b=False),
            ),
        ]
    # the MLP's first layer (3072 -> 512): products far larger than L2 (blocked schedule)
    out += [
        (
            "mlp1.fwd",
            "matmul",
            dict(a_shape=(n, 3072), b_shape=(512, 3072), trans_a=False, trans_b=True, bias=True),
        ),
        (
            "mlp1.dw",
            "matmul",
            dict(a_shape=(n, 512), b_shape=(n, 3072), trans_a=True, trans_b=False),
        ),
    ]
    return out


def _conv_trio(label: str, x: tuple, w: tuple, **attrs) -> list[tuple[str, str, dict]]:
    """conv2d (bias, ReLU), conv2d_input_grad and conv2d_weight_grad of one layer."""
    conv = {**CONV, **attrs}
    stride, pad, dil = conv["stride"], conv["padding"], conv["dilation"]
    oh, ow = (
        (x[2 + a] + 2 * pad[a] - dil[a] * (w[2 + a] - 1) - 1) // stride[a] + 1 for a in range(2)
    )
    y = (x[0], w[0], oh, ow)
    return [
        (f"{label}.fwd", "conv2d", dict(x_shape=x, w_shape=w, bias=True, relu=True, **conv)),
        (f"{label}.dx", "conv2d_input_grad", dict(g_shape=y, w_shape=w, input_shape=x, **conv)),
        (f"{label}.dw", "conv2d_weight_grad", dict(x_shape=x, g_shape=y, weight_shape=w, **conv)),
    ]


def mobilenet_workload(n: int) -> list[tuple[str, str, dict]]:
    """MobileNet's depthwise layers (one filter per channel; the narrow and strided ones
    take the depthwise schedule) and 1x1 layers as graphc runs them (passes/pointwise.py:
    [N, C, 1, H*W] rows, or, on 2x2 planes, matmuls over [C, N*H*W] copies)."""
    out = []
    for c, h, s in ((32, 32, 1), (64, 32, 2), (128, 16, 2), (256, 8, 1), (256, 8, 2),
                    (512, 4, 1), (512, 4, 2), (1024, 2, 1)):  # fmt: skip
        out += _conv_trio(f"dw{c}x{h}s{s}", (n, c, h, h), (c, 1, 3, 3),
                          stride=(s, s), padding=(1, 1), groups=c)  # fmt: skip
    for c, o, h in ((64, 128, 16), (256, 256, 8), (512, 512, 4)):
        fwd, dx, _ = _conv_trio(f"pw{c}x{h}", (n, c, 1, h * h), (o, c, 1, 1))
        cols = n * h * h  # the weight gradient is a matmul over [C, N*H*W] copies
        dw = dict(a_shape=(o, cols), b_shape=(c, cols), trans_a=False, trans_b=True)
        out += [fwd, dx, (f"pw{c}x{h}.dw", "matmul", dw)]
    c, p = 1024, n * 4  # the 2x2 plane: matmuls
    out += [
        ("pw1024x2.fwd", "matmul", dict(a_shape=(c, c), b_shape=(c, p), trans_a=False,
                                         trans_b=False)),
        ("pw1024x2.dx", "matmul", dict(a_shape=(c, c), b_shape=(c, p), trans_a=True,
                                        trans_b=False)),
        ("pw1024x2.dw", "matmul", dict(a_shape=(c, p), b_shape=(c, p), trans_a=False,
                                        trans_b=True)),
    ]  # fmt: skip
    return out


def autoencoder_workload(n: int) -> list[tuple[str, str, dict]]:
    """The autoencoder's stride-2 convolutions; its transposed convolutions are the
    conv2d_input_grad kernels of the same geometries."""
    out = []
    for c, o, h in ((3, 32, 32), (32, 64, 16), (64, 128, 8)):
        out += _conv_trio(f"enc{c}-{o}", (n, c, h, h), (o, c, 3, 3),
                          stride=(2, 2), padding=(1, 1))  # fmt: skip
    return out


WORKLOADS = {
    "convnet": workload,
    "mobilenet": mobilenet_workload,
    "autoencoder": autoencoder_workload,
}

_EMIT = {
    "conv2d": emit_conv2d,
    "conv2d_input_grad": emit_conv2d_input_grad,
    "conv2d_weight_grad": emit_conv2d_weight_grad,
    "matmul": emit_matmul,
}


def _inputs(op: str, kw: dict, rng) -> tuple[list[np.ndarray], np.ndarray]:
    """Random inputs in kernel argument order and the reference output."""
    f32 = np.float32

    def r(shape):
        return rng.standard_normal(shape).astype(f32)

    attrs = {k: kw[k] for k in ("stride", "padding", "dilation", "groups") if k in kw}
    if op == "conv2d":
        x, w, b = r(kw["x_shape"]), r(kw["w_shape"]), r(kw["w_shape"][0])
        ref = np.maximum(OPS["conv2d"].ref(x, w, **attrs) + b[None, :, None, None], 0)
        return [x, w, b], ref
    if op == "conv2d_input_grad":
        g, w = r(kw["g_shape"]), r(kw["w_shape"])
        return [g, w], OPS[op].ref(g, w, input_shape=kw["input_shape"], **attrs)
    if op == "conv2d_weight_grad":
        x, g = r(kw["x_shape"]), r(kw["g_shape"])
        return [x, g], OPS[op].ref(x, g, weight_shape=kw["weight_shape"], **attrs)
    a, b = r(kw["a_shape"]), r(kw["b_shape"])
    ref = OPS["matmul"].ref(a, b, trans_a=kw["trans_a"], trans_b=kw["trans_b"])
    if kw.get("bias"):
        bias = r(ref.shape[-1])
        return [a, b, bias], ref + bias
    return [a, b], ref


def _timed(fn, args, inner: int) -> tuple[float, float]:
    """(wall, thread CPU) seconds per call. CPU time leaves out the time this thread was
    descheduled, which is most of the noise on a shared machine."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(inner):
        fn(*args)
    return (time.perf_counter() - t0) / inner, (time.thread_time() - c0) / inner


def run(batches: list[int], reps: int, only: set[str] | None, suite: str = "convnet") -> None:
    target = host_target()
    rng = np.random.default_rng(0)
    print(f"target: {target.describe()}")
    a = rng.standard_normal((512, 512)).astype(np.float32)
    gemm = (lambda: a @ a, 2 * 512**3)
    for n in batches:
        kernels = []
        for label, op, kw in WORKLOADS[suite](n):
            if only and label not in only:
                continue
            module = ir.Module()
            spec = _EMIT[op](module, label.replace(".", "_"), dtype="float32", target=target, **kw)
            t0 = time.perf_counter()
            lib = jit.compile_module(module, target)
            compile_s = time.perf_counter() - t0
            ins, ref = _inputs(op, kw, rng)
            out = np.empty(ref.shape, np.float32)
            fn = kernel_cfunc(lib.address(spec.name), spec)
            args = [out.ctypes.data] + [x.ctypes.data for x in ins] + [0, spec.parallel_extent]
            fn(*args)
            err = float(np.abs(out - ref).max() / (1 + np.abs(ref).max()))
            once = _timed(fn, args, 1)[0]
            inner = max(1, int(2e-3 / max(once, 1e-7)))
            moved = sum(x.nbytes for x in ins) + out.nbytes
            kernels.append((label, spec, lib, fn, args, inner, compile_s, err, [ins, out], moved))
        wall: dict[str, list[float]] = {k[0]: [] for k in kernels}
        cpu: dict[str, list[float]] = {k[0]: [] for k in kernels}
        peak_wall, peak_cpu = [], []
        for _ in range(reps):
            w, c = _timed(gemm[0], (), 3)
            peak_wall.append(gemm[1] / w / 1e9)
            peak_cpu.append(gemm[1] / c / 1e9)
            for label, _spec, _lib, fn, args, inner, *_ in kernels:
                w, c = _timed(fn, args, inner)
                wall[label].append(w)
                cpu[label].append(c)
        peak = float(np.median(peak_cpu))
        print(
            f"\nbatch {n}: numpy sgemm 512^3, 1 thread: {peak:.1f} GFLOP/s median by thread CPU "
            f"time ({np.median(peak_wall):.1f} by wall time, best {max(peak_wall):.1f}); "
            f"{reps} interleaved rounds"
        )
        print(
            f"{'kernel':15s} {'wall us':>8s} {'best':>7s} {'cpu us':>8s} {'GFLOP/s':>8s} "
            f"{'%peak':>6s} {'GB/s':>6s} {'compile':>8s} {'rel.err':>8s}  schedule"
        )
        total = 0.0
        for label, spec, _lib, _fn, _args, _inner, compile_s, err, _keep, moved in kernels:
            med, best = float(np.median(wall[label])), float(min(wall[label]))
            cmed = float(np.median(cpu[label]))
            total += cmed
            gf = spec.flops / cmed / 1e9
            print(
                f"{label:15s} {med * 1e6:8.1f} {best * 1e6:7.1f} {cmed * 1e6:8.1f} {gf:8.1f} "
                f"{100 * gf / peak:5.0f}% {moved / cmed / 1e9:6.1f} {compile_s * 1e3:6.0f}ms "
                f"{err:8.1e}  {spec.schedule}"
            )
        flops = sum(k[1].flops for k in kernels)
        print(
            f"{'total':15s} {'':8s} {'':7s} {total * 1e6:8.1f} {flops / total / 1e9:8.1f} "
            f"{100 * flops / total / 1e9 / peak:5.0f}%   (GFLOP/s and %peak from CPU time)"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        # numpy (imported with graphc) reads this when it loads: start over with it set,
        # or the "1-thread" sgemm would use every core (and spin when they are busy).
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "graphc.codegen.kernels.bench", *argv]
        os.execve(sys.executable, cmd, env)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--only", default="", help="comma-separated kernel labels")
    p.add_argument(
        "--model",
        default="convnet",
        choices=sorted(WORKLOADS),
        help="whose kernels: the reference ConvNet's and the MLP's (default), MobileNet's "
        "depthwise and 1x1 layers, or the autoencoder's strided layers",
    )
    args = p.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    run(args.batch, args.reps, only, args.model)


if __name__ == "__main__":
    main()
