"""A restricted unpickler for data files that are pickles of plain numpy arrays.

`pickle.load` on a file someone handed you runs whatever code the file names. The data sets
that ship as pickles (CIFAR-10's python batches) contain only dicts, lists, strings, ints and
uint8 arrays, so this unpickler resolves exactly the globals such files name (numpy's array
reconstruction and dtype constructor, and `_codecs.encode` for bytes written by Python 3
under protocol 2), each wrapped to accept only plain numeric data. Any other global — os,
subprocess, builtins.eval, a class — is refused before anything runs.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the internals; pickles name either module
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something a plain-data file never contains."""


def _dtype(spec, align=False, copy=False) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("ascii")
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refusing numpy dtype built from {type(spec).__name__}")
    dt = np.dtype(spec)
    if dt.kind not in "biuf":
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: only numeric arrays are allowed")
    return dt


def _reconstruct(subtype, shape, dtype) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError("refusing to reconstruct an ndarray subclass")
    return _np_reconstruct(np.ndarray, shape, dtype)


def _frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise UnsafePickleError("refusing a non-numeric array")
    if not all(isinstance(d, int) for d in shape):
        raise UnsafePickleError("refusing an array with a non-integer shape")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order).copy()


def _codecs_encode(text, encoding="utf-8", errors="strict") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with anything but latin1 text")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"the pickle asks for {module}.{name}; a data file contains only arrays, "
                "lists, dicts, strings and numbers, so it was refused without running it"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent references")


def loads_plain_data(data: bytes) -> Any:
    """Unpickles plain data (Python 2 strings come back as bytes). Raises UnsafePickleError
    for anything that would run code, pickle.UnpicklingError/EOFError/ValueError when the
    stream is corrupt or truncated."""
    result = _Unpickler(io.BytesIO(data), encoding="bytes").load()
    _check_plain(result)
    return result


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 20:
        raise UnsafePickleError("refusing deeply nested data")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError("refusing an array of Python objects")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, depth + 1)
    elif not isinstance(obj, (int, float, str, bytes, type(None))):
        raise UnsafePickleError(f"refusing an object of type {type(obj).__name__}")
