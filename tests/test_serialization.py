"""graphc.save / graphc.load: round trips, state dicts, atomic writes, corruption reports."""

import io
import json
import math
import os
import struct

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.optim as optim
from graphc import serialization
from graphc.errors import DataError
from graphc.models import MLP


def same(a, b) -> bool:
    """Structural equality with exact array contents, dtypes and container types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, graphc.Tensor):
        return a.dtype == b.dtype and same(a.numpy(), b.numpy())
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (np.isnan(a) and np.isnan(b)))
    return a == b


def test_round_trip_of_nested_values(tmp_path):
    obj = {
        "tensors": [graphc.randn(2, 3), graphc.tensor(7), graphc.arange(5), graphc.tensor(2.5)],
        "arrays": {
            "f64": np.linspace(0, 1, 7),
            "i8": np.arange(-3, 3, dtype=np.int8),
            "u8": np.arange(4, dtype=np.uint8).reshape(2, 2),
            "bool": np.array([True, False]),
            "empty": np.zeros((0, 4), np.float32),
            "scalar0d": np.array(3.5, np.float32),
            "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
            "big_endian": np.arange(3, dtype=">i4"),
        },
        1: "int key",
        (2, "x"): [None, True, False],
        "numbers": (0, -(2**70), 1.5, float("inf"), float("-inf"), float("nan")),
        "text": "ünïcode ✓",
        "bytes": b"\x00\xffraw",
        "np_scalars": [np.float32(1.25), np.int64(-4)],
        "nested": {"a": {"b": {"c": [[], {}, ()]}}},
    }
    path = tmp_path / "obj.ckpt"
    graphc.save(obj, path)
    back = graphc.load(path)
    expected = dict(obj)
    expected["arrays"] = dict(obj["arrays"])
    expected["arrays"]["big_endian"] = obj["arrays"]["big_endian"].astype("=i4")
    assert same(back, expected)
    assert back["arrays"]["strided"].flags.writeable
    assert back["tensors"][0].shape == (2, 3) and back["tensors"][1].shape == ()


def test_file_objects(tmp_path):
    buffer = io.BytesIO()
    graphc.save({"w": graphc.ones(3)}, buffer)
    buffer.seek(0)
    assert graphc.load(buffer)["w"].numpy().tolist() == [1.0, 1.0, 1.0]


def train_steps(net, opt, steps: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        x = graphc.from_numpy(rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
        y = graphc.from_numpy(rng.integers(0, 10, 8))
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        lambda p: optim.Adam(p, lr=1e-3),
        lambda p: optim.AdamW(p, lr=1e-3, amsgrad=True),
    ],
)
def test_model_and_optimizer_state_round_trip_continues_identically(tmp_path, make_opt):
    graphc.manual_seed(1)
    net = MLP(hidden=16)
    opt = make_opt(net.parameters())
    train_steps(net, opt, 2, seed=0)
    path = tmp_path / "state.ckpt"
    graphc.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 4}, path)

    graphc.manual_seed(2)  # different initial weights, overwritten by the load
    net2 = MLP(hidden=16)
    opt2 = make_opt(net2.parameters())
    ckpt = graphc.load(path)
    net2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    assert ckpt["epoch"] == 4
    assert same(opt.state_dict()["param_groups"], ckpt["optimizer"]["param_groups"])

    assert train_steps(net, opt, 2, seed=1) == train_steps(net2, opt2, 2, seed=1)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_file_is_safetensors_compatible(tmp_path):
    path = tmp_path / "m.ckpt"
    graphc.save({"model": {"fc.weight": graphc.ones(2, 3)}, "step": 3}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert (8 + n) % 8 == 0
    assert header["model/fc.weight"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["__metadata__"]["format"] == "graphc"
    assert all(isinstance(v, str) for v in header["__metadata__"].values())
    assert len(raw) == 8 + n + 24


def test_loads_plain_safetensors_files(tmp_path):
    data = np.arange(6, dtype=np.float32).tobytes() + np.array([7], np.int64).tobytes()
    header = {
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
    }
    text = json.dumps(header).encode()
    path = tmp_path / "plain.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    back = graphc.load(path)
    assert back["a"].numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["b"].dtype == graphc.int64


def test_unsupported_values_name_their_place(tmp_path):
    with pytest.raises(TypeError, match=r"cannot store a set \(at /config/tags\)"):
        graphc.save({"config": {"tags": {1, 2}}}, tmp_path / "x")
    with pytest.raises(TypeError, match="dtype complex128"):
        graphc.save({"z": np.zeros(2, complex)}, tmp_path / "x")
    with pytest.raises(TypeError, match="object"):
        graphc.save([object()], tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---- atomic writes ---------------------------------------------------------------------------


def leftovers(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_crash_while_writing_leaves_the_previous_file(tmp_path, monkeypatch, error):
    path = tmp_path / "ckpt"
    graphc.save({"version": 1, "w": graphc.zeros(1000)}, path)
    before = path.read_bytes()
    real_write = serialization._write

    def crash_halfway(out, tree, arrays):
        out.write(b"partial header")
        real_write(io.BytesIO(), tree, arrays)
        raise error

    monkeypatch.setattr(serialization, "_write", crash_halfway)
    with pytest.raises(type(error)):
        graphc.save({"version": 2, "w": graphc.ones(1000)}, path)
    assert path.read_bytes() == before
    assert graphc.load(path)["version"] == 1
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_and_keeps_permissions_sane(tmp_path):
    path = tmp_path / "f.bin"
    serialization.atomic_write(path, b"one")
    serialization.atomic_write(path, lambda out: out.write(b"two"))
    assert path.read_bytes() == b"two"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert leftovers(tmp_path) == []
    with pytest.raises(DataError, match="directory .*missing.* does not exist"):
        serialization.atomic_write(tmp_path / "missing" / "f", b"x")


# ---- damaged files ---------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.ckpt"
    graphc.save({"w": graphc.randn(64), "epoch": 2}, path)
    return path


def test_flipped_byte_is_detected(saved):
    raw = bytearray(saved.read_bytes())
    raw[-10] ^= 0x40
    saved.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"good.ckpt is not a readable graphc checkpoint.*checksum"):
        graphc.load(saved)


@pytest.mark.parametrize("keep", [0, 5, 20, -1])
def test_truncated_file_is_detected(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:keep])
    with pytest.raises(DataError, match="good.ckpt is not a readable graphc checkpoint"):
        graphc.load(saved)


def test_other_files_are_reported(tmp_path):
    with pytest.raises(DataError, match="nope.ckpt does not exist"):
        graphc.load(tmp_path / "nope.ckpt")
    with pytest.raises(DataError, match="is a directory"):
        graphc.load(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("these are not tensors at all, just a text file with words")
    with pytest.raises(DataError, match="notes.txt is not a readable graphc checkpoint"):
        graphc.load(text)
    with pytest.raises(ValueError, match="CPU only"):
        serialization.load(text, map_location="cuda")


def test_newer_format_version_is_reported(saved):
    raw = saved.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["version"] = "99"
    text = json.dumps(header).encode()
    saved.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(DataError, match="newer graphc"):
        graphc.load(saved)
