"""graphc.save / graphc.load: checkpoints without pickle, written atomically.

The file is a safetensors file (any safetensors reader lists its tensors):

    u64 little-endian N | N bytes of JSON header, space-padded | the tensors' bytes, packed

The header maps each tensor's name ("model/conv1.weight") to its dtype, shape and byte range;
its "__metadata__" holds the saved object's structure as JSON ("tree": dicts with any key
type, lists, tuples, numbers, strings, None, and references to the tensors) plus a CRC-32 of
the data, so a truncated or corrupted file is reported instead of loaded. Nothing in the
file is ever executed. `load` also reads plain safetensors files written elsewhere, as a
flat {name: Tensor} dict.

Writes go to a temporary file in the target's directory, are fsynced, then renamed over the
target: a crash at any moment leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from graphc import dispatch
from graphc.errors import ArgumentError, DataError
from graphc.tensor import Tensor

FORMAT = "graphc"
VERSION = "1"
_MAX_HEADER = 100 << 20  # a header larger than this is not a checkpoint header
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}

PathLike = str | os.PathLike


# ---- writing ------------------------------------------------------------------------------


def save(obj: Any, f: PathLike | BinaryIO) -> None:
    """Saves nested dicts/lists/tuples of tensors, arrays, numbers, strings and None."""
    arrays: list[tuple[str, np.ndarray]] = []
    tree = _encode(obj, "", arrays, set())
    if hasattr(f, "write"):
        _write(f, tree, arrays)
    else:
        atomic_write(f, lambda out: _write(out, tree, arrays))


def _write(out: BinaryIO, tree: Any, arrays: list[tuple[str, np.ndarray]]) -> None:
    # widest items first keeps every tensor aligned to its item size inside the data section
    order = sorted(range(len(arrays)), key=lambda i: -arrays[i][1].dtype.itemsize)
    header: dict[str, Any] = {}
    offset, crc = 0, 0
    for i in order:
        name, a = arrays[i]
        header[name] = {
            "dtype": _NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
        crc = zlib.crc32(a.data if a.nbytes else b"", crc)
    header["__metadata__"] = {
        "format": FORMAT,
        "version": VERSION,
        "tree": json.dumps(tree, allow_nan=False, separators=(",", ":")),
        "crc32": f"{crc:08x}",
        "data_bytes": str(offset),
    }
    text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # data section starts 8-byte aligned
    out.write(struct.pack("<Q", len(text)))
    out.write(text)
    for i in order:
        a = arrays[i][1]
        if a.nbytes:
            out.write(a.data)


def _encode(obj: Any, path: str, arrays: list, names: set) -> Any:
    """obj as JSON; tensors and arrays go to `arrays` and are referenced by name."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, Tensor):
        return {"$tensor": _add_array(obj.detach().numpy(), path, arrays, names)}
    if isinstance(obj, np.ndarray):
        return {"$ndarray": _add_array(obj, path, arrays, names)}
    if isinstance(obj, np.generic):
        return {"$scalar": _add_array(np.asarray(obj), path, arrays, names)}
    if isinstance(obj, bytes):
        return {"$bytes": _add_array(np.frombuffer(obj, np.uint8), path, arrays, names)}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", arrays, names) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, f"{path}/{i}", arrays, names) for i, v in enumerate(obj)]}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {"$map": {k: _encode(v, f"{path}/{k}", arrays, names) for k, v in obj.items()}}
        return {
            "$dict": [
                [_encode(k, f"{path}/key", arrays, names), _encode(v, f"{path}/{k}", arrays, names)]
                for k, v in obj.items()
            ]
        }
    if callable(getattr(obj, "state_dict", None)):
        raise dispatch.user_error(
            ArgumentError,
            f"graphc.save stores state dicts, not a {type(obj).__name__} itself (at "
            f"{path or 'the top level'}): save obj.state_dict(), and restore it with "
            "obj.load_state_dict(graphc.load(path))",
        )
    raise dispatch.user_error(
        ArgumentError,
        f"graphc.save cannot store a {type(obj).__name__} (at {path or 'the top level'}): "
        "checkpoints hold tensors, numpy arrays, numbers, strings, bytes, None and "
        "dicts/lists/tuples of them (no pickle); convert it to one of those first",
    )


def _add_array(a: np.ndarray, path: str, arrays: list, names: set) -> str:
    if np.dtype(a.dtype).newbyteorder("=") not in _NAMES:
        raise dispatch.user_error(
            ArgumentError,
            f"graphc.save cannot store an array of dtype {a.dtype} (at {path}); supported: "
            + ", ".join(sorted(str(np.dtype(d)) for d in _DTYPES.values()))
            + "; convert it first",
        )
    a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
    a = a.view(a.dtype.newbyteorder("="))  # same bytes; the header names the dtype
    name = path.lstrip("/") or "tensor"
    base, k = name, 1
    while name in names:
        k += 1
        name = f"{base}#{k}"
    names.add(name)
    arrays.append((name, a))
    return name


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None] | bytes) -> None:
    """Writes a file so that a crash leaves either the old contents or the new, never a mix:
    a temporary file in the same directory, fsync, rename over the target, fsync the dir."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise DataError(
            f"cannot write {path}: the directory {directory} does not exist; create it first"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as out:
            if isinstance(write, (bytes, bytearray)):
                out.write(write)
            else:
                write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:  # reading the umask means setting it; done once, at first save
        old = os.umask(0o022)
        os.umask(old)
        _UMASK.append(old)
    return _UMASK[0]


# ---- reading ------------------------------------------------------------------------------


def load(
    f: PathLike | BinaryIO,
    map_location: Any = None,
    pickle_module: Any = None,
    *,
    weights_only: bool | None = None,
    mmap: bool | None = None,
) -> Any:
    """Loads what `save` wrote. Tensors come back as graphc Tensors, arrays as arrays.

    torch.load's arguments are accepted: map_location may name the CPU (a string, a device,
    a {from: to} dict or a function); weights_only needs no opt-in, since nothing in a
    graphc checkpoint is ever executed; pickle_module must be None (there is no pickle)."""
    _check_map_location(map_location)
    if pickle_module is not None:
        raise ValueError("graphc checkpoints contain no pickle: pass no pickle_module")
    if hasattr(f, "read"):
        raw, where = f.read(), getattr(f, "name", "<stream>")
    else:
        where = str(f)
        try:
            raw = Path(f).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{where} does not exist; check the path") from None
        except IsADirectoryError:
            raise DataError(
                f"{where} is a directory, not a checkpoint file; pass the file inside it"
            ) from None
    return _parse(memoryview(raw), where)


def _check_map_location(map_location: Any) -> None:
    from graphc.device import check_device, is_device

    if isinstance(map_location, Mapping):
        targets = list(map_location.values())
    elif callable(map_location) and not is_device(map_location):
        return  # torch calls it per storage; every graphc tensor is on the CPU already
    else:
        targets = [map_location]
    for target in targets:
        check_device(target, "load(map_location=...)")


def _parse(raw: memoryview, where: str) -> Any:
    def corrupt(what: str) -> DataError:
        return DataError(
            f"{where} is not a readable graphc checkpoint: {what}. If it was being written "
            "when a run stopped, use the previous checkpoint; otherwise save it again"
        )

    if bytes(raw[:4]) == b"PK\x03\x04" or bytes(raw[:2]) in (b"\x80\x02", b"\x80\x04"):
        raise DataError(
            f"{where} is a PyTorch checkpoint (torch.save's zip or pickle format), which "
            "graphc does not read: unpickling can run arbitrary code. Load it with PyTorch "
            "and hand the state dict over (load_state_dict accepts PyTorch tensors), or "
            "convert it once: graphc.save({k: v.numpy() for k, v in "
            "torch.load(path).items()}, 'model.safetensors')"
        )
    if len(raw) < 8:
        raise corrupt(f"it is only {len(raw)} bytes long")
    (n,) = struct.unpack_from("<Q", raw)
    if n > min(_MAX_HEADER, len(raw) - 8):
        raise corrupt("its header length is impossible (truncated, or not a safetensors file)")
    try:
        header = json.loads(bytes(raw[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    data = raw[8 + n :]
    arrays = {name: _array(name, spec, data, corrupt) for name, spec in header.items()}
    if meta.get("format") != FORMAT:  # a plain safetensors file: its tensors by name
        return {name: Tensor._wrap(a) for name, a in arrays.items()}
    if meta.get("version") != VERSION:
        raise DataError(
            f"{where} was written by a newer graphc (format version {meta.get('version')}); "
            "upgrade graphc to read it"
        )
    if len(data) != int(meta.get("data_bytes", -1)):
        raise corrupt(f"it has {len(data)} data bytes, its header promises {meta['data_bytes']}")
    if int(meta.get("crc32", "0"), 16) != zlib.crc32(data):
        raise corrupt("the checksum of its data does not match (the bytes were damaged)")
    try:
        tree = json.loads(meta["tree"])
        return _decode(tree, arrays)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise corrupt(f"its structure record is damaged ({e})") from None


def _array(name: str, spec: Any, data: memoryview, corrupt) -> np.ndarray:
    try:
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        shape = tuple(int(d) for d in spec["shape"])
        start, stop = (int(v) for v in spec["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise corrupt(
            f"the entry for tensor {name!r} is malformed or has an unknown dtype"
        ) from None
    count = math.prod(shape)
    if not 0 <= start <= stop <= len(data) or stop - start != count * dtype.itemsize:
        raise corrupt(f"tensor {name!r} lies outside the file (truncated?)")
    a = np.frombuffer(data, dtype, count, start).reshape(shape)
    return a.astype(dtype.newbyteorder("="), copy=True)  # writable, aligned, native order


def _decode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    ((tag, value),) = node.items()
    if tag == "$map":
        return {k: _decode(v, arrays) for k, v in value.items()}
    if tag == "$dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value}
    if tag == "$tuple":
        return tuple(_decode(v, arrays) for v in value)
    if tag == "$tensor":
        return Tensor._wrap(arrays[value])
    if tag == "$ndarray":
        return arrays[value]
    if tag == "$scalar":
        return arrays[value][()]
    if tag == "$bytes":
        return arrays[value].tobytes()
    if tag == "$float":
        return float(value)
    raise ValueError(f"unknown tag {tag}")
