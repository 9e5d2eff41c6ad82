"""The machine we generate code for: triple, CPU, features, vector width, TargetMachines.

`host_target()` describes this CPU. `GRAPHC_TARGET` narrows it so the AVX2 and SSE paths can
be exercised on an AVX-512 machine (tests do this):

    GRAPHC_TARGET=host     this CPU, all its features (the default)
    GRAPHC_TARGET=avx512   x86-64-v4 level: 512-bit vectors, FMA, 32 vector registers
    GRAPHC_TARGET=avx2     Haswell level: 256-bit vectors, FMA, 16 vector registers
    GRAPHC_TARGET=generic  baseline x86-64 (SSE2): 128-bit vectors, no FMA

Only the feature set changes code generation; the resulting code still runs here because each
narrower level is a subset of the host's. `level_target` gives the same levels without asking
the host for them: `graphc export --target` builds libraries for other machines.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm

from graphc import dtypes
from graphc.passes.tiles import VectorUnit

ENV_VAR = "GRAPHC_TARGET"
KINDS = ("host", "avx512", "avx2", "generic")
LEVELS = ("avx512", "avx2", "generic")  # instruction-set levels, widest first


@functools.cache
def _init_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@dataclass(frozen=True)
class Target:
    """What codegen needs to know about the CPU; immutable and hashable (part of cache keys)."""

    kind: str  # "host", "avx2" or "generic"
    triple: str
    cpu: str
    features: str  # LLVM feature string, "+avx2,+fma,..." (may be empty)
    vector_bits: int  # width of the vectors the kernels use: 512, 256 or 128
    vector_registers: int  # architectural vector registers available to a register tile
    has_fma: bool

    @property
    def f32_lanes(self) -> int:
        return self.vector_bits // 32

    def lanes(self, dtype: dtypes.DType | str) -> int:
        """Vector lanes of `dtype` in one register."""
        return self.vector_bits // (8 * dtypes.get(dtype).itemsize)

    def vector_unit(self) -> VectorUnit:
        """What the tile plans (passes/tiles.py) need to know about this target."""
        return VectorUnit(self.vector_bits, self.vector_registers)

    @property
    def function_attributes(self) -> dict[str, str]:
        """String attributes every emitted function should carry (see irutil.set_fn_attrs).

        On Intel AVX-512 parts LLVM's tuning prefers 256-bit vectors for auto-vectorised
        loops (TuningPrefer256Bit); graphc wants 512. The feature string already turns the
        tuning off; the function attribute keeps it off if a function is compiled by a
        TargetMachine created elsewhere.
        """
        attrs = {"no-trapping-math": "true"}
        if self.vector_bits == 512:
            attrs["prefer-vector-width"] = "512"
        return attrs

    def target_machine(self, opt: int = 3, *, pic: bool = True) -> llvm.TargetMachine:
        """A fresh TargetMachine. Fresh on every call: MCJIT takes ownership of the TM it is
        given and frees it with the engine, so sharing one is a use-after-free waiting to happen.

        `pic=True` (position-independent, small code model) gives objects that load at any
        address through the JIT linker and could also be linked into a shared library.
        """
        _init_llvm()
        t = llvm.Target.from_triple(self.triple)
        return t.create_target_machine(
            cpu=self.cpu,
            features=self.features,
            opt=opt,
            reloc="pic" if pic else "default",
            codemodel="default",
        )

    def cache_key(self) -> str:
        """Everything about the target that changes the emitted machine code."""
        return "|".join(
            [self.kind, self.triple, self.cpu, self.features, f"llvmlite-{llvmlite.__version__}"]
        )

    def describe(self) -> str:
        fma = "fma" if self.has_fma else "no fma"
        return (
            f"{self.kind}: {self.triple} cpu={self.cpu}, {self.vector_bits}-bit vectors "
            f"({self.f32_lanes} x f32), {self.vector_registers} vector registers, {fma}"
        )


def _host() -> Target:
    _init_llvm()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    on = {k for k, v in feats.items() if v}
    x86 = triple.startswith(("x86_64", "i686", "i386"))
    if x86 and "avx512f" in on:
        bits, regs = 512, 32
        feats["prefer-256-bit"] = False  # keep 512-bit auto-vectorisation on Intel tunings
    elif x86 and "avx2" in on and "fma" in on:
        bits, regs = 256, 16
    else:
        bits, regs = 128, 16 if x86 else 32
    fma = ("fma" in on) if x86 else True
    return Target("host", triple, cpu, feats.flatten(), bits, regs, fma)


def _narrowed(host: Target, kind: str) -> Target:
    if not host.triple.startswith("x86_64"):
        raise ValueError(f"{ENV_VAR}={kind} is only meaningful on x86-64 (this is {host.triple})")
    if kind == "avx512" and host.vector_bits < 512:
        raise ValueError(f"{ENV_VAR}=avx512 asked for, but this CPU has no AVX-512")
    if kind == "avx2" and host.vector_bits < 256:
        raise ValueError(f"{ENV_VAR}=avx2 asked for, but this CPU has no AVX2+FMA")
    return level_target(kind, host.triple)


def level_target(kind: str, triple: str) -> Target:
    """The x86-64 instruction-set level `kind` (one of LEVELS), whether or not this CPU has it:
    code for it runs on every CPU of that level (graphc export checks at run time)."""
    if kind == "avx512":
        # Generic x86-64-v4 tuning would prefer 256-bit vectors, as Intel's does.
        return Target("avx512", triple, "x86-64-v4", "-prefer-256-bit", 512, 32, True)
    if kind == "avx2":
        return Target("avx2", triple, "haswell", "", 256, 16, True)
    if kind == "generic":
        return Target("generic", triple, "x86-64", "", 128, 16, False)
    raise ValueError(f"unknown instruction-set level {kind!r}; expected one of {', '.join(LEVELS)}")


@functools.cache
def get_target(kind: str = "host") -> Target:
    """The target of the given kind ("host", "avx512", "avx2", "generic") on this machine."""
    if kind not in KINDS:
        raise ValueError(f"unknown target {kind!r}; expected one of {', '.join(KINDS)}")
    host = _host()
    return host if kind == "host" else _narrowed(host, kind)


def host_target() -> Target:
    """The default target: this CPU, narrowed by GRAPHC_TARGET when it is set."""
    kind = os.environ.get(ENV_VAR, "host").strip().lower() or "host"
    if kind not in KINDS:
        raise ValueError(
            f"{ENV_VAR}={kind!r} is not a known target; expected one of {', '.join(KINDS)}"
        )
    return get_target(kind)
