"""The CPU features an exported library checks at NAME_create, as cpuid bits.

For the instruction-set levels (`--target generic|avx2|avx512`) the list is the level's
definition (x86-64-v3 for avx2, v4 for avx512), which is all the code generator may use
without intrinsics. For `host` it is every feature of this CPU that the table below knows;
features it does not know are listed as unchecked in NAME.json. AVX and AVX-512 code also
needs the operating system to save the wider registers, which XCR0 says.
"""

from __future__ import annotations

from dataclasses import dataclass

EAX, EBX, ECX, EDX, XCR0 = range(5)


@dataclass(frozen=True)
class Feature:
    name: str
    leaf: int
    subleaf: int
    reg: int
    bit: int  # a bit number; for XCR0 the mask of state components that must be enabled


def _bits(leaf: int, subleaf: int, reg: int, names: dict[str, int]) -> dict[str, Feature]:
    return {n: Feature(n, leaf, subleaf, reg, b) for n, b in names.items()}


# From the Intel SDM's and AMD's cpuid tables (LLVM's feature names).
TABLE: dict[str, Feature] = {
    **_bits(1, 0, EDX, {"cx8": 8, "cmov": 15, "mmx": 23, "fxsr": 24, "sse": 25, "sse2": 26}),
    **_bits(
        1,
        0,
        ECX,
        {
            "sse3": 0,
            "pclmul": 1,
            "ssse3": 9,
            "fma": 12,
            "cx16": 13,
            "sse4.1": 19,
            "sse4.2": 20,
            "crc32": 20,
            "movbe": 22,
            "popcnt": 23,
            "aes": 25,
            "xsave": 26,
            "avx": 28,
            "f16c": 29,
            "rdrnd": 30,
        },
    ),
    **_bits(
        7,
        0,
        EBX,
        {
            "fsgsbase": 0,
            "bmi": 3,
            "avx2": 5,
            "bmi2": 8,
            "invpcid": 10,
            "avx512f": 16,
            "avx512dq": 17,
            "rdseed": 18,
            "adx": 19,
            "avx512ifma": 21,
            "clflushopt": 23,
            "clwb": 24,
            "avx512cd": 28,
            "sha": 29,
            "avx512bw": 30,
            "avx512vl": 31,
        },
    ),
    **_bits(
        7,
        0,
        ECX,
        {
            "avx512vbmi": 1,
            "pku": 3,
            "waitpkg": 5,
            "avx512vbmi2": 6,
            "shstk": 7,
            "gfni": 8,
            "vaes": 9,
            "vpclmulqdq": 10,
            "avx512vnni": 11,
            "avx512bitalg": 12,
            "avx512vpopcntdq": 14,
            "rdpid": 22,
            "cldemote": 25,
            "movdiri": 27,
            "movdir64b": 28,
        },
    ),
    **_bits(
        7,
        0,
        EDX,
        {
            "avx512vp2intersect": 8,
            "serialize": 14,
            "amx-bf16": 22,
            "avx512fp16": 23,
            "amx-tile": 24,
            "amx-int8": 25,
        },
    ),
    **_bits(7, 1, EAX, {"avxvnni": 4, "avx512bf16": 5}),
    **_bits(0xD, 1, EAX, {"xsaveopt": 0, "xsavec": 1, "xsaves": 3}),
    **_bits(
        0x80000001,
        0,
        ECX,
        {
            "sahf": 0,
            "lzcnt": 5,
            "sse4a": 6,
            "prfchw": 8,
            "xop": 11,
            "fma4": 16,
            "tbm": 21,
            "mwaitx": 29,
        },
    ),
    **_bits(0x80000001, 0, EDX, {"64bit": 29}),
    **_bits(0x80000008, 0, EBX, {"clzero": 0, "rdpru": 4, "wbnoinvd": 9}),
}
OS_AVX = Feature("os-avx-state", 0, 0, XCR0, 0x6)  # SSE and AVX registers saved
OS_AVX512 = Feature("os-avx512-state", 0, 0, XCR0, 0xE6)  # and the AVX-512 ones

_V2 = ["cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"]
_V3 = _V2 + ["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"]
_V4 = _V3 + ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
LEVELS = {"generic": ["sse2"], "avx2": _V3, "avx512": _V4}
_AVX_STATE = ("avx", "fma", "f16c", "vaes", "vpclmulqdq")


def required(kind: str, features: str, triple: str) -> tuple[list[Feature], list[str]]:
    """(features to check, features of the target this table cannot check) for a target of
    `kind` whose LLVM feature string is `features`."""
    if not triple.startswith("x86_64"):
        return [], [f[1:] for f in features.split(",") if f.startswith("+")]
    names = LEVELS.get(kind)
    if names is None:  # host: every feature it has
        names = [f[1:] for f in features.split(",") if f.startswith("+")]
    checked = [TABLE[n] for n in names if n in TABLE]
    unchecked = [n for n in names if n not in TABLE]
    if any(n.startswith("avx") or n in _AVX_STATE for n in names):
        checked.append(OS_AVX)
    if any(n.startswith("avx512") for n in names):
        checked.append(OS_AVX512)
    return checked, unchecked
