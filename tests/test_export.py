"""graphc export: libraries run through their C API match graphc.compile bit for bit.

The C programs in tests/capi/ are compiled here with the system C compiler (the tests skip
cleanly without one) and run as child processes, so a crash would show as a failed run.
"""

from __future__ import annotations

import ctypes
import json
import platform
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.optim as optim
from graphc.capi import ExportError, build_library
from graphc.capi.build import find_compiler
from graphc.models import MLP, ConvNet

CAPI = Path(__file__).parent / "capi"
BATCH, STEPS = 16, 20


@pytest.fixture(scope="module")
def compiler():
    try:
        return find_compiler()
    except ExportError as e:
        pytest.skip(str(e))


def build_program(compiler, source: Path, libraries: list[tuple[Path, str]], output: Path):
    """Compiles a test program against exported libraries (their headers must compile
    without warnings)."""
    cmd = [*compiler.argv, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", str(source)]
    for where, name in libraries:
        cmd += [f"-I{where}", f"-L{where}", f"-l{name}", f"-Wl,-rpath,{where}"]
    cmd += ["-lm", "-o", str(output)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return output


def run(*cmd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def write_batches(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.write_bytes(x.astype(np.float32).tobytes() + y.astype("<i8").tobytes())
    return path


def sgd_convnet():
    graphc.manual_seed(0)
    net = ConvNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    @graphc.compile
    def train_step(inputs, labels):
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    return net, optimizer, train_step


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compiler):
    """The ConvNet's SGD step exported, then STEPS steps of it in C and in Python."""
    tmp = tmp_path_factory.mktemp("export")
    net, optimizer, train_step = sgd_convnet()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS, BATCH, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, (STEPS, BATCH))
    result = graphc.export(
        train_step,
        graphc.from_numpy(x[0]),
        graphc.from_numpy(y[0]),
        path=tmp / "lib",
        name="convnet",
    )
    initial = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    data = write_batches(tmp / "data.bin", x, y)
    program = build_program(compiler, CAPI / "train_steps.c", [(tmp / "lib", "convnet")], tmp / "t")
    runs = {}
    for threads in (1, 2):
        out = run(program, data, STEPS, tmp / f"w{threads}.safetensors", threads)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[STEPS] == f"threads {threads}"
        runs[threads] = [float.fromhex(v) for v in lines[:STEPS]]
    python = [
        train_step(graphc.from_numpy(x[s]), graphc.from_numpy(y[s])).item() for s in range(STEPS)
    ]
    return SimpleNamespace(
        tmp=tmp,
        net=net,
        optimizer=optimizer,
        step=train_step,
        x=x,
        y=y,
        result=result,
        initial=initial,
        data=data,
        runs=runs,
        python=python,
    )


def test_c_training_steps_equal_compile_bitwise(trained):
    assert trained.runs[1] == trained.python
    assert trained.runs[2] == trained.python  # the pool's chunks do not change the numbers


def test_saved_weights_load_into_graphc_and_match(trained):
    saved = trained.tmp / "w1.safetensors"
    assert saved.read_bytes() == (trained.tmp / "w2.safetensors").read_bytes()
    checkpoint = graphc.load(saved)
    net = ConvNet()
    net.load_state_dict(checkpoint["model"])  # strict: exactly the state_dict's names
    optimizer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    optimizer.load_state_dict(checkpoint["optimizer"])
    for k, v in trained.net.state_dict().items():
        assert np.array_equal(net.state_dict()[k].numpy(), v.numpy()), k
    theirs = trained.optimizer.state_dict()
    for i, state in optimizer.state_dict()["state"].items():
        assert np.array_equal(
            state["momentum_buffer"].numpy(), theirs["state"][i]["momentum_buffer"].numpy()
        )
    assert optimizer.param_groups[0]["lr"] == np.float32(0.01)


def test_abi_file_describes_the_library(trained):
    abi = json.loads(trained.result.abi.read_text())
    graph = trained.step.last.graph
    assert abi["graph_hash"] == graph.structural_hash()
    assert abi["arena_bytes"] == graph.meta["memory"].arena_bytes
    assert abi["kind"] == "train" and abi["library"] == "libconvnet.so"
    assert [a["name"] for a in abi["arguments"]] == ["inputs", "labels"]
    assert abi["arguments"][0]["shape"] == [BATCH, 3, 32, 32]
    assert abi["arguments"][1]["classes"] == 10
    assert len(abi["inputs"]) == len(graph.inputs)
    assert {i["storage"] for i in abi["inputs"]} == {"argument", "state", "scalars"}
    assert abi["outputs"][0]["role"] == "loss" and abi["outputs"][0]["storage"] == "arena"
    weights = {w["name"]: w for w in abi["weights"]}
    assert weights["conv1.weight"]["shape"] == [6, 3, 5, 5]
    assert "optimizer/state/0/momentum_buffer" in weights
    assert abi["target"]["cpu_features"] and "step" in abi["functions"]
    header = trained.result.header.read_text()
    assert "int convnet_step(convnet_ctx *ctx, const float *inputs" in header
    assert f"#define CONVNET_INPUTS_SIZE {BATCH * 3 * 32 * 32}" in header


def test_library_exports_only_its_own_functions(trained):
    from graphc.capi import _functions

    symbols = _dynamic_symbols(trained.result.library)
    assert {f"convnet_{f}" for f in _functions("train")} <= symbols
    assert not any(s.startswith(("graphc_", "grt_")) for s in symbols)


def _dynamic_symbols(path: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = run(nm, "-D", "--defined-only", path)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def test_serial_build_needs_no_pthreads(trained, compiler):
    tmp = trained.tmp
    graphc.manual_seed(0)
    net, _, train_step = sgd_convnet()
    serial = graphc.export(
        train_step,
        graphc.from_numpy(trained.x[0]),
        graphc.from_numpy(trained.y[0]),
        path=tmp / "serial",
        name="convnet",
        threads=1,
    )
    assert b"pthread_create" not in serial.library.read_bytes()
    assert b"pthread_create" in trained.result.library.read_bytes()
    program = build_program(
        compiler, CAPI / "train_steps.c", [(tmp / "serial", "convnet")], tmp / "s"
    )
    out = run(program, trained.data, STEPS, tmp / "serial.safetensors", 4)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert [float.fromhex(v) for v in lines[:STEPS]] == trained.python
    assert lines[STEPS] == "threads 1"


def test_training_and_inference_libraries_in_one_program(trained, compiler):
    """Two exported libraries link into one program (their internals stay private); the
    trained weights move between them through a file."""
    tmp = trained.tmp
    net = ConvNet().eval()
    graphc.export(net, graphc.from_numpy(trained.x[0]), path=tmp / "infer", name="classifier")
    program = build_program(
        compiler,
        CAPI / "two_libraries.c",
        [(tmp / "lib", "convnet"), (tmp / "infer", "classifier")],
        tmp / "two",
    )
    out = run(program, trained.data, STEPS, tmp / "moved.safetensors")
    assert out.returncode == 0, out.stderr
    logits = np.array([float.fromhex(v) for v in out.stdout.split()], np.float32)
    net.load_state_dict(trained.net.state_dict())
    expected = graphc.compile(net)(graphc.from_numpy(trained.x[-1])).numpy()
    assert np.array_equal(logits.reshape(expected.shape), expected)


# ---- bad input through the C API -------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """A plain safetensors file, as safetensors.torch.save_file writes one."""
    header, data, at = {}, b"", 0
    for name, a in tensors.items():
        kind = {"float32": "F32", "int64": "I64"}[a.dtype.name]
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        data += a.tobytes()
        at += a.nbytes
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_bad_input_is_an_error_code_never_a_crash(trained, compiler):
    tmp = trained.tmp / "bad"
    tmp.mkdir()
    graphc.save(MLP().state_dict(), tmp / "wrong_model.safetensors")
    good = (trained.tmp / "w1.safetensors").read_bytes()
    (tmp / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    damaged = bytearray(good)
    damaged[-100] ^= 0xFF
    (tmp / "damaged.safetensors").write_bytes(bytes(damaged))
    other = {k: v.numpy() for k, v in ConvNet().state_dict().items()}
    other["fc1.weight"] = np.zeros((100, 400), np.float32)
    (tmp / "other_shapes.safetensors").write_bytes(safetensors_bytes(other))
    (tmp / "notes.txt").write_text("not weights\n")
    files = {p.name: p.read_bytes() for p in tmp.iterdir()}
    program = build_program(
        compiler, CAPI / "bad_input.c", [(trained.tmp / "lib", "convnet")], tmp / "b"
    )
    args = [tmp / n for n in ("wrong_model.safetensors", "truncated.safetensors")]
    args += [tmp / n for n in ("damaged.safetensors", "other_shapes.safetensors", "notes.txt")]
    out = run(program, *args, tmp, tmp / "saved.safetensors")
    assert out.returncode == 0, out.stderr
    got = {}
    for line in out.stdout.splitlines():
        name, code, message = line.split("|", 2)
        got[name] = (int(code), message)
    ARGUMENT, IO, FORMAT, MODEL, DATA = 1, 5, 6, 7, 8
    expected = {
        "create_null": (ARGUMENT, "ctx is NULL"),
        "create_threads": (ARGUMENT, "num_threads is -3"),
        "step_null_ctx": (ARGUMENT, "convnet_step: ctx is NULL"),
        "load_null_ctx": (ARGUMENT, "ctx is NULL"),
        "save_null_ctx": (ARGUMENT, "ctx is NULL"),
        "step_null_inputs": (ARGUMENT, "inputs is NULL: pass 49152 floats"),
        "step_null_labels": (ARGUMENT, "labels is NULL"),
        "step_label_high": (DATA, "labels[3] is 10, outside 0..9"),
        "step_label_negative": (DATA, "labels[3] is -1"),
        "step_lr_nan": (ARGUMENT, "lr is nan"),
        "step_lr_negative": (ARGUMENT, "lr is -1"),
        "load_null_path": (ARGUMENT, "path is NULL"),
        "load_missing": (IO, "cannot open /nonexistent/w.safetensors: No such file"),
        "load_directory": (IO, "is not a regular file"),
        "load_wrong_model": (MODEL, "has no tensor 'conv1.weight'"),
        "load_truncated": (FORMAT, "not a readable weights file"),
        "load_damaged": (FORMAT, "checksum"),
        "load_other_shapes": (MODEL, "holds tensor 'fc1.weight' as F32 [100, 400]"),
        "load_not_weights": (FORMAT, "header length is impossible"),
        "save_null_path": (ARGUMENT, "path is NULL"),
        "save_no_directory": (IO, "does its directory exist?"),
        "save": (0, "ok"),
        "step_no_loss": (0, "ok"),
        "load_saved": (0, "ok"),
        "destroy": (0, ""),  # (the status of NULL is this thread's last failure without a ctx)
        "destroy_null": (0, ""),
    }
    assert set(got) == set(expected)
    for name, (code, text) in expected.items():
        assert got[name][0] == code and text in got[name][1], (name, got[name])
    # Nothing was written over the files given, and no temporary file is left behind.
    for name, data in files.items():
        assert (tmp / name).read_bytes() == data, name
    assert sorted(p.name for p in tmp.iterdir()) == sorted([*files, "b", "saved.safetensors"])
    # The failed loads changed nothing: what it saved afterwards is the exported state.
    saved = graphc.load(tmp / "saved.safetensors")
    assert set(saved["model"]) == set(trained.initial)
    for k, v in trained.initial.items():
        assert np.array_equal(saved["model"][k].numpy(), v), k
    assert saved["optimizer"]["state"] == {}  # no step yet: no optimizer state, as in PyTorch


def test_weights_from_graphc_and_plain_safetensors_load(trained, tmp_path):
    """A graphc.save'd state_dict, a graphc train checkpoint ("model/" names) and a plain
    safetensors state_dict all load; the optimizer starts afresh when the file has none."""
    lib = _open(trained.result.library, "convnet")
    ctx = lib.create()
    net = ConvNet()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    paths = {
        "graphc": tmp_path / "graphc.safetensors",
        "checkpoint": tmp_path / "checkpoint.ckpt",
        "plain": tmp_path / "plain.safetensors",
    }
    graphc.save(net.state_dict(), paths["graphc"])
    graphc.save({"model": net.state_dict(), "epoch": 3}, paths["checkpoint"])
    paths["plain"].write_bytes(safetensors_bytes(state))
    for kind, path in paths.items():
        assert lib.call("load_weights", ctx, str(path).encode()) == 0, (kind, lib.status(ctx))
        out = tmp_path / f"{kind}.out"
        assert lib.call("save_weights", ctx, str(out).encode()) == 0
        saved = graphc.load(out)
        assert all(np.array_equal(saved["model"][k].numpy(), v) for k, v in state.items())
        assert saved["optimizer"]["state"] == {}
    assert lib.call("destroy", ctx) == 0


class _Library:
    """An exported library through ctypes (the same C API, in this process)."""

    def __init__(self, path: Path, name: str) -> None:
        self.dll = ctypes.CDLL(str(path))
        self.name = name
        status = getattr(self.dll, f"{name}_status")
        status.restype = ctypes.c_char_p
        status.argtypes = [ctypes.c_void_p]
        self._status = status

    def call(self, fn: str, *args) -> int:
        return getattr(self.dll, f"{self.name}_{fn}")(*args)

    def create(self, threads: int = 0) -> ctypes.c_void_p:
        ctx = ctypes.c_void_p()
        rc = self.call("create", ctypes.byref(ctx), threads)
        assert rc == 0, self.status(None)
        return ctx

    def status(self, ctx) -> str:
        return self._status(ctx).decode()


def _open(path: Path, name: str) -> _Library:
    return _Library(path, name)


def _pointer(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


# ---- inference ------------------------------------------------------------------------------


def test_inference_logits_equal_compile_bitwise_and_torch(tmp_path, compiler, request):
    graphc.manual_seed(3)
    net = ConvNet().eval()
    x = np.random.default_rng(2).standard_normal((BATCH, 3, 32, 32), dtype=np.float32)
    result = graphc.export(net, graphc.from_numpy(x), path=tmp_path)
    assert result.kind == "inference" and result.name == "convnet"
    lib = _open(result.library, "convnet")
    ctx = lib.create()
    logits = np.empty((BATCH, 10), np.float32)
    assert lib.call("forward", ctx, _pointer(x), _pointer(logits)) == 0, lib.status(ctx)
    expected = graphc.compile(net)(graphc.from_numpy(x)).numpy()
    assert np.array_equal(logits, expected)
    assert lib.call("forward", ctx, _pointer(x), None) == 1
    assert "outputs is NULL" in lib.status(ctx)
    assert lib.call("destroy", ctx) == 0
    try:
        torch = request.getfixturevalue("torch")
    except pytest.skip.Exception:
        return
    from test_parity_torch import torch_convnet

    twin = torch_convnet(torch).eval()
    saved = tmp_path / "weights.safetensors"
    ctx = lib.create()
    assert lib.call("save_weights", ctx, str(saved).encode()) == 0
    state = graphc.load(saved)  # an inference library saves the state_dict itself
    twin.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in state.items()})
    with torch.no_grad():
        reference = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
    assert lib.call("destroy", ctx) == 0


def test_generic_target_matches_compile_for_that_target(tmp_path, compiler, monkeypatch):
    graphc.manual_seed(4)
    net = ConvNet().eval()
    x = np.random.default_rng(5).standard_normal((4, 3, 32, 32), dtype=np.float32)
    result = graphc.export(
        net, graphc.from_numpy(x), path=tmp_path, name="generic", target="generic", threads=1
    )
    abi = json.loads(result.abi.read_text())
    assert abi["target"]["kind"] == "generic" and abi["target"]["cpu_features"] == ["sse2"]
    lib = _open(result.library, "generic")
    ctx = lib.create()
    logits = np.empty((4, 10), np.float32)
    assert lib.call("forward", ctx, _pointer(x), _pointer(logits)) == 0
    monkeypatch.setenv("GRAPHC_TARGET", "generic")
    assert np.array_equal(logits, graphc.compile(net)(graphc.from_numpy(x)).numpy())
    assert lib.call("destroy", ctx) == 0


# ---- the CPU check -------------------------------------------------------------------------------


def test_library_refuses_a_cpu_without_its_instructions(tmp_path, compiler):
    """Simulated: the library is built to believe the CPU has only SSE2 and SSE3."""
    if platform.machine() != "x86_64":
        pytest.skip("the instruction-set levels are x86-64's")
    net = ConvNet().eval()
    x = graphc.zeros(2, 3, 32, 32)
    result = build_library(
        net, [x], tmp_path, name="picky", target="avx2", simulate_cpu="sse2,sse3"
    )
    lib = _open(result.library, "picky")
    ctx = ctypes.c_void_p(123)
    assert lib.call("create", ctypes.byref(ctx), 0) == 2  # PICKY_ERR_CPU
    assert ctx.value is None
    message = lib.status(None)
    missing = message.split("this CPU lacks ")[1].split(", which")[0].split(", ")
    assert {"ssse3", "sse4.1", "avx", "avx2", "fma", "os-avx-state"} <= set(missing)
    assert "sse2" not in missing and "sse3" not in missing
    assert "export it again with --target generic" in message
    assert lib.call("forward", None, None, None) == 1  # still no crash without a context


# ---- the Python API and the command line -----------------------------------------------------


def test_export_errors_say_what_to_do(tmp_path, monkeypatch):
    net = ConvNet()
    with pytest.raises(ExportError, match=r"training mode.*\.eval\(\)"):
        graphc.export(net, graphc.zeros(2, 3, 32, 32), path=tmp_path)
    with pytest.raises(ExportError, match="cannot prefix C functions"):
        graphc.export(net.eval(), graphc.zeros(2, 3, 32, 32), path=tmp_path, name="2net")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is a file; pass the directory"):
        graphc.export(net.eval(), graphc.zeros(2, 3, 32, 32), path=tmp_path / "file")
    with pytest.raises(ExportError, match="unknown target 'sse9'"):
        graphc.export(net, graphc.zeros(2, 3, 32, 32), path=tmp_path, target="sse9")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ExportError, match="needs a C compiler.*apt-get install gcc"):
        graphc.export(net, graphc.zeros(2, 3, 32, 32), path=tmp_path)


def test_a_step_that_accumulates_gradients_is_refused(tmp_path, compiler):
    net = nn.Linear(4, 3)
    optimizer = optim.SGD(net.parameters(), lr=0.1)

    def accumulate(x, y):  # no zero_grad: .grad carries over between calls
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    x, y = graphc.randn(2, 4), graphc.randint(0, 3, (2,))
    accumulate(x, y)  # eager: leaves .grad set
    with pytest.raises(ExportError, match="accumulates gradients.*zero_grad"):
        graphc.export(accumulate, x, y, path=tmp_path)


def test_cli_exports_a_training_step(tmp_path, compiler, capsys):
    from graphc.cli import main

    out = tmp_path / "out"
    assert main(["export", "--train", "--batch-size", "8", "-o", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "libconvnet.so" in printed and "-lconvnet" in printed
    abi = json.loads((out / "convnet.json").read_text())
    assert abi["kind"] == "train" and abi["threads"] == "serial"
    assert abi["arguments"][0]["shape"] == [8, 3, 32, 32]
    assert main(["export", "--model", "nope", "-o", str(out)]) == 1
    assert "--model must be one of" in capsys.readouterr().err
    for model, why in [("transformer", "token ids"), ("autoencoder", "reconstruct")]:
        assert main(["export", "--model", model, "-o", str(tmp_path / model)]) == 1
        err = capsys.readouterr().err
        assert why in err and "image classifiers" in err and "graphc train" in err
        assert not (tmp_path / model).exists()


def test_readme_c_program_trains_on_the_builtin_data(tmp_path, compiler):
    """The README's C program, as printed there, against a library the command line wrote."""
    from graphc.cli import main
    from graphc.data import SyntheticCIFAR

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Running without Python")[1]
    source = section.split("```c\n")[1].split("```")[0]
    assert len(source.splitlines()) <= 30
    (tmp_path / "train.c").write_text(source)
    assert main(["export", "--train", "--batch-size", "8", "-o", str(tmp_path / "out")]) == 0
    d = SyntheticCIFAR(train=True, size=44)
    x = (d.images / 255.0 - 0.5) / 0.25
    write_batches(tmp_path / "train.bin", x, d.labels)
    program = build_program(
        compiler, tmp_path / "train.c", [(tmp_path / "out", "convnet")], tmp_path / "train"
    )
    out = subprocess.run([str(program)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "5 steps, mean loss" in out.stdout
    saved = graphc.load(tmp_path / "convnet.safetensors")
    assert set(saved["model"]) == set(ConvNet().state_dict())


class _BNNet(nn.Module):
    """BatchNorm (running statistics updated by the step) and Dropout (random draws)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(nn.functional.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(x.flatten(1)))


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_optimizers_buffers_and_random_draws_match_compile(tmp_path, compiler, kind):
    """Adam's bias corrections (two parameter groups), AdamW's decay, SGD's dampening and
    weight decay, BatchNorm's buffers and Dropout's generator: bit for bit with Python."""
    graphc.manual_seed(0)
    net, criterion = _BNNet(), nn.CrossEntropyLoss()
    if kind == "adam":
        conv = [net.conv.weight, net.conv.bias]
        rest = [p for n, p in net.named_parameters() if not n.startswith("conv")]
        groups = [{"params": conv}, {"params": rest, "lr": 0.0005}]
        optimizer = optim.Adam(groups, lr=0.001, weight_decay=1e-4)
    elif kind == "adamw":
        optimizer = optim.AdamW(net.parameters(), lr=0.001)
    else:
        optimizer = optim.SGD(
            net.parameters(), lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-3
        )

    @graphc.compile
    def step(x, y):
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 3, 16, 16), dtype=np.float32)
    y = rng.integers(0, 10, (4, 8))
    result = graphc.export(step, graphc.from_numpy(x[0]), graphc.from_numpy(y[0]), path=tmp_path)
    lib = _open(result.library, "step")
    ctx = lib.create(2)
    lr = ctypes.c_float(optimizer.param_groups[0]["lr"])  # the exported lr
    losses = []
    for s in range(4):
        loss = ctypes.c_float()
        rc = lib.call("step", ctx, _pointer(x[s]), _pointer(y[s]), lr, ctypes.byref(loss))
        assert rc == 0, lib.status(ctx)
        losses.append(loss.value)
    saved = tmp_path / "w.safetensors"
    assert lib.call("save_weights", ctx, str(saved).encode()) == 0
    assert lib.call("destroy", ctx) == 0
    python = [step(graphc.from_numpy(x[s]), graphc.from_numpy(y[s])).item() for s in range(4)]
    assert losses == python
    checkpoint = graphc.load(saved)
    for k, v in net.state_dict().items():  # BatchNorm's buffers included
        assert np.array_equal(checkpoint["model"][k].numpy(), v.numpy()), k
    for i, state in optimizer.state_dict()["state"].items():
        for k, v in state.items():
            assert np.array_equal(checkpoint["optimizer"]["state"][i][k].numpy(), v.numpy())
    assert np.array_equal(checkpoint["rng"], graphc.get_rng_state())
    assert [g["lr"] for g in checkpoint["optimizer"]["param_groups"]] == [
        g["lr"] for g in optimizer.param_groups
    ]
