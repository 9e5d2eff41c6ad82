"""The on-disk compile cache: machine code for a graph, keyed so a hit is always safe to run.

Key: sha256 of the optimised graph (ops, attributes, types, wiring; its schedule and memory
plan follow from it deterministically) + the target (CPU name and features) + graphc's and
llvmlite's versions + a digest of the compiler's own source (codegen/, passes/, graphc/ops/),
so an edited compiler never runs machine code an older one emitted.
Entry file: a fixed header, the payload's length and sha256, then the
object code. A truncated or corrupted entry fails the checksum and is rebuilt, never loaded.
Writes go to a temporary file in the same directory, are fsynced and renamed into place, so
concurrent writers and crashes never leave a partial entry under the final name.

Location: $GRAPHC_CACHE_DIR, else $XDG_CACHE_HOME/graphc, else ~/.cache/graphc: a step's
objects at the top, each kernel code's object (shared by every step that calls it, see
passes/share.py) under kernels/.
GRAPHC_DISABLE_CACHE=1 turns it off. A location that cannot be written (read-only, a file,
a full disk) only costs recompiling: one GraphcWarning per process says so and what to do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

from graphc import dispatch
from graphc.errors import GraphcWarning

MAGIC = b"GRAPHC-OBJ\x01"
_HEADER = struct.Struct("<Q32s")  # payload length, sha256 of payload


def cache_dir() -> Path | None:
    if os.environ.get("GRAPHC_DISABLE_CACHE", "") not in ("", "0"):
        return None
    root = os.environ.get("GRAPHC_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "graphc"


def cache_key(graph_hash: str, target_key: str) -> str:
    import llvmlite

    import graphc

    parts = [graph_hash, target_key, graphc.__version__, llvmlite.__version__, compiler_digest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.cache
def compiler_digest() -> str:
    """sha256 over the source files that decide what machine code a graph becomes."""
    from graphc import codegen, ops, passes

    h = hashlib.sha256()
    for package in (codegen, passes, ops):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def load(key: str, group: str = "") -> bytes | None:
    """The cached object for `key`, or None (missing, disabled, or failing its checksum).
    `group`: a subdirectory (compiled kernels live in "kernels", steps at the top)."""
    root = cache_dir()
    if root is None:
        return None
    path = root / group / f"{key}.o"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + _HEADER.size
    if len(data) < head or not data.startswith(MAGIC):
        _discard(path)
        return None
    length, digest = _HEADER.unpack_from(data, len(MAGIC))
    payload = data[head:]
    if len(payload) != length or hashlib.sha256(payload).digest() != digest:
        _discard(path)  # truncated or corrupted: rebuild rather than run it
        return None
    return payload


def store(key: str, payload: bytes, group: str = "") -> None:
    """Writes an entry atomically; failures (read-only disk, full disk) only cost a rebuild."""
    top = cache_dir()
    if top is None:
        return
    root = top / group
    try:
        root.mkdir(parents=True, exist_ok=True)
        blob = MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / f"{key}.o")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        _warn_unwritable(top, e)


_warned: set[Path] = set()


def _warn_unwritable(top: Path, error: OSError) -> None:
    if top in _warned:
        return
    _warned.add(top)
    why = "it is a file, not a directory" if top.is_file() else error.strerror or str(error)
    message = (
        f"graphc cannot write its compile cache in {top} ({why}); compiled code is not kept "
        "for the next process. Set GRAPHC_CACHE_DIR to a writable directory, or "
        "GRAPHC_DISABLE_CACHE=1 to compile without a cache"
    )
    loc = dispatch.user_location()  # the user's call that compiled, not this line
    if loc is None:
        warnings.warn(message, GraphcWarning, stacklevel=3)
    else:
        warnings.warn_explicit(message, GraphcWarning, loc.file, loc.line)


_RECORD = struct.Struct("<I")


def pack_kernel(record: dict, obj: bytes) -> bytes:
    """One kernel's cache payload: how to call it (JSON, see codegen/lower.KernelModule),
    then its object code."""
    text = json.dumps(record, sort_keys=True).encode()
    return _RECORD.pack(len(text)) + text + obj


def unpack_kernel(payload: bytes | None) -> tuple[dict, bytes] | None:
    """(record, object) of a payload from pack_kernel; None (a miss) if it is not one."""
    if payload is None or len(payload) < _RECORD.size:
        return None
    (n,) = _RECORD.unpack_from(payload)
    try:
        record = json.loads(payload[_RECORD.size : _RECORD.size + n])
    except ValueError:
        return None
    obj = payload[_RECORD.size + n :]
    return (record, obj) if isinstance(record, dict) and obj else None


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
