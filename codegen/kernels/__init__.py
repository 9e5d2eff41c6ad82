"""Contraction kernels (matmul, conv2d and its gradients) emitted as explicit-vector LLVM IR.

Each emitter adds one function with the ABI described in `common` to an llvmlite module and
returns a `KernelSpec` saying what it computes and how it was scheduled.
"""

from graphc.codegen.kernels.common import KernelSpec, run_kernel
from graphc.codegen.kernels.conv import (
    emit_conv2d,
    emit_conv2d_input_grad,
    emit_conv2d_weight_grad,
)
from graphc.codegen.kernels.gemm import emit_matmul

__all__ = [
    "KernelSpec",
    "emit_conv2d",
    "emit_conv2d_input_grad",
    "emit_conv2d_weight_grad",
    "emit_matmul",
    "run_kernel",
]
