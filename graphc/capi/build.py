"""Building libNAME.so with the system C compiler: it compiles the runtime (runtime.c,
weights.c: the same for every model, so cached) and the generated model.c, and links them
with the step's objects. The compiler (and through it the linker, ld) is looked up when a
library is exported, never needed to run one.

Why a C runtime rather than more LLVM IR: parsing a safetensors header, writing files
atomically, starting pthreads and reading cpuid are a few hundred plain lines of C, easy to
read and review, and the compiler that links the library is needed anyway; the kernels and
the thread pool's protocol stay in LLVM IR, shared with graphc.compile.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from graphc.capi.layout import ExportError
from graphc.codegen import cache

SOURCE_DIR = Path(__file__).parent
RUNTIME_SOURCES = ("runtime.c", "weights.c")
CANDIDATES = ("cc", "gcc", "clang")
CACHE_GROUP = "capi"  # compiled runtimes, in graphc's compile cache


@dataclass(frozen=True)
class Compiler:
    argv: tuple[str, ...]  # the command, with any flags $CC carries
    identity: str  # its --version line: part of the cached runtime's key

    def describe(self) -> str:
        return " ".join(self.argv)


def find_compiler() -> Compiler:
    """$CC if set, else the first of cc, gcc, clang on PATH."""
    if platform.system() != "Linux":
        raise ExportError(
            f"graphc export builds ELF shared libraries on Linux; this is {platform.system()}"
        )
    env = os.environ.get("CC", "").strip()
    choices = [shlex.split(env)] if env else [[name] for name in CANDIDATES]
    for argv in choices:
        path = shutil.which(argv[0])
        if path is None:
            continue
        try:
            out = subprocess.run(
                [path, *argv[1:], "--version"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            first = (out.stdout.strip().splitlines() or [path])[0]
            return Compiler((path, *argv[1:]), first)
    looked = f"$CC ({env})" if env else ", ".join(CANDIDATES)
    linker = shutil.which("ld")
    also = (
        f"; the linker {linker} alone is not enough, the library's runtime is C source"
        if linker
        else ""
    )
    raise ExportError(
        f"graphc export needs a C compiler to build and link the library, and found none "
        f"(looked for {looked} on PATH{also}). Install one (Debian/Ubuntu: apt-get install "
        "gcc; Fedora: dnf install gcc) or point $CC at it"
    )


def _flags() -> list[str]:
    flags = ["-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra"]
    # The runtime's double arithmetic must round as Python's does (no fused multiply-add),
    # and it runs before the CPU check: baseline instructions only.
    flags.append("-ffp-contract=off")
    if platform.machine() in ("x86_64", "AMD64"):
        flags += ["-march=x86-64", "-mtune=generic"]
    return flags


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    except OSError as e:
        raise ExportError(f"{what}: could not run {cmd[0]}: {e}") from None
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what}: {cmd[0]} did not finish in 10 minutes") from None
    if out.returncode == 0:
        return
    text = (out.stderr or out.stdout).strip().splitlines()
    tail = "\n  ".join(text[-12:]) or f"exit status {out.returncode}"
    hint = ""
    if any("cannot find" in line and "ld" in line for line in text) or "collect2" in "".join(text):
        hint = (
            "\n  the C compiler could not run the linker: install it (binutils: "
            "apt-get install binutils) or set $CC to a compiler that has one"
        )
    raise ExportError(f"{what} failed:\n  {shlex.join(cmd)}\n  {tail}{hint}")


def runtime_objects(
    compiler: Compiler, threaded: bool, build_dir: Path, simulate_cpu: str | None = None
) -> list[Path]:
    """The runtime's objects, from the cache when this compiler built the same sources with
    the same flags before. `simulate_cpu` (tests): the CPU check sees only these features."""
    defines = [f"-DGRAPHC_THREADS={int(threaded)}"]
    if simulate_cpu is not None:
        defines.append(f'-DGRAPHC_SIMULATED_CPU="{simulate_cpu}"')
    header = (SOURCE_DIR / "runtime.h").read_bytes()
    out = []
    for name in RUNTIME_SOURCES:
        source = (SOURCE_DIR / name).read_bytes()
        cmd = [*compiler.argv, *_flags(), *defines, f"-I{SOURCE_DIR}", "-c", str(SOURCE_DIR / name)]
        key = hashlib.sha256(
            b"\0".join([source, header, compiler.identity.encode(), " ".join(cmd).encode()])
        ).hexdigest()
        path = build_dir / (Path(name).stem + ".o")
        obj = cache.load(key, CACHE_GROUP)
        if obj is None:
            _run([*cmd, "-o", str(path)], f"compiling the library's runtime ({name})", build_dir)
            cache.store(key, path.read_bytes(), CACHE_GROUP)
        else:
            path.write_bytes(obj)
        out.append(path)
    return out


def compile_model(compiler: Compiler, source: Path, build_dir: Path) -> Path:
    obj = source.with_suffix(".o")
    cmd = [*compiler.argv, *_flags(), f"-I{SOURCE_DIR}", f"-I{build_dir}", "-c", str(source)]
    _run([*cmd, "-o", str(obj)], "compiling the model's tables (model.c)", build_dir)
    return obj


def link(
    compiler: Compiler,
    objects: list[Path],
    exported: list[str],
    soname: str,
    output: Path,
    threaded: bool,
    build_dir: Path,
) -> None:
    """A shared library exporting only `exported`: every other symbol (the kernels, the
    entry, the runtime) stays local, so two exported models link into one program."""
    script = build_dir / "exports.map"
    names = "".join(f"    {s};\n" for s in exported)
    script.write_text("{\n  global:\n" + names + "  local: *;\n};\n")
    cmd = [*compiler.argv, "-shared", "-o", str(output), *map(str, objects)]
    cmd += [f"-Wl,--version-script={script}", f"-Wl,-soname,{soname}"]
    cmd += ["-Wl,-z,noexecstack", "-Wl,-z,defs", "-lm"]
    if threaded:
        cmd.append("-pthread")
    _run(cmd, f"linking {soname}", build_dir)
