"""The fused tail of a contraction: + bias, relu, + the old output (accumulate)."""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import irutil as U


@dataclass(frozen=True)
class Epilogue:
    """out = relu(acc + bias) (+ out_old when accumulating), in that order."""

    bias: bool = False
    relu: bool = False
    accumulate: bool = False

    def apply(
        self, b: ir.IRBuilder, acc: ir.Value, bias: ir.Value | None, old: ir.Value | None
    ) -> ir.Value:
        v = acc
        if self.bias:
            v = b.fadd(v, bias, name="biased")
        if self.relu:
            v = U.relu(b, v)
        if self.accumulate:
            v = b.fadd(old, v, name="accumulated")
        return v

    def describe(self) -> str:
        parts = (["+ bias"] if self.bias else []) + (["relu"] if self.relu else [])
        parts += ["out +="] if self.accumulate else []
        return ", ".join(parts) or "none"
