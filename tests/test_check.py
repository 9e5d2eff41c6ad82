"""`graphc check`: native step vs the reference interpreter, value by value; an injected fault
(the --fault test hook corrupts one kernel's output) is found and named, with its source line."""

import os
import subprocess
import sys

import numpy as np
import pytest

import graphc
from graphc.inspection.check import compare, phases
from graphc.inspection.target import resolve
from graphc.printer import value_names

MODEL = """\
import graphc.nn as nn
import graphc.nn.functional as F


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = F.relu(self.fc1(x))  # HIDDEN
        return self.fc2(h)


def scaled_sum(a, b):
    return (a * 2 + b.exp()).sum(1)
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("check") / "small.py"
    path.write_text(MODEL)
    return str(path)


def graphc_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "graphc.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )


def kernel_output_name(insp, kernel):
    graph = insp.graph()
    k = next(k for k in graph.meta["schedule"].kernels if k.name == kernel)
    return value_names(graph)[k.outputs[0]], k.outputs[0]


def test_check_passes_on_a_correct_step(model_file):
    out = graphc_cli("check", f"{model_file}:Small", "--input-shape", "4x8", "--steps", "2")
    assert out.returncode == 0, out.stderr
    assert "OK: every stored value matches" in out.stdout
    assert "step 1: " in out.stdout  # both steps ran
    assert "forward" in out.stdout and "backward" in out.stdout and "update" in out.stdout


def test_check_catches_an_injected_fault_and_names_the_node(model_file):
    target = f"{model_file}:Small"
    name, node = kernel_output_name(resolve(target, "4x8", None).inspection(), "k0_matmul")
    out = graphc_cli("check", target, "--input-shape", "4x8", "--fault", "k0_matmul")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("DIVERGED at step 0: first wrong value, in the forward:")
    assert lines[at + 1].strip().startswith(f"{name}: f32[4,16] = relu(")
    assert lines[at + 1].endswith("[kernel k0_matmul]")
    hidden_line = MODEL.splitlines().index("        h = F.relu(self.fc1(x))  # HIDDEN") + 1
    assert lines[at + 2].strip() == f"at {model_file}:{hidden_line} in forward"
    # The fault adds 1 to the first element.
    assert "|native - reference| = 1 at [0, 0]" in lines[at + 3]


def test_a_fault_in_the_backward_is_reported_in_the_backward(model_file):
    insp = resolve(f"{model_file}:Small", "4x8", None).inspection()
    phase = phases(insp.graph())
    kernels = insp.graph().meta["schedule"].kernels
    backward = next(
        k
        for k in kernels
        if phase[k.outputs[0]] == "backward" and k.outputs[0].dtype.is_floating_point
    )
    report = insp.check(steps=1, fault=backward.name)
    assert not report.ok
    assert report.first.node is backward.outputs[0]
    assert (report.first.phase, report.first.kernel, report.first.step) == (
        "backward",
        backward.name,
        0,
    )
    assert "forward" not in {d.phase for d in report.divergences}
    assert "first wrong value, in the backward:" in report.text()


def test_check_of_inference_and_of_a_function(model_file):
    out = graphc_cli("check", f"{model_file}:Small", "--input-shape", "4x8", "--inference")
    assert out.returncode == 0 and "forward" in out.stdout and "backward" not in out.stdout
    out = graphc_cli("check", f"{model_file}:scaled_sum", "--input-shape", "3x5,3x5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


def test_phases_split_forward_backward_and_update(model_file):
    graph = resolve(f"{model_file}:Small", "4x8", None).inspection().graph()
    phase = phases(graph)
    loss = graph.output("return")
    assert phase[loss] == "forward"
    assert phase[graph.output("fc1.weight.grad")] == "backward"
    assert phase[graph.output("fc1.weight")] == "update"
    assert set(phase.values()) == {"forward", "backward", "update"}


def test_compare_tolerances_nan_and_exact_dtypes():
    a = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare(a, a.copy(), 1e-3, 1e-4) is None  # NaN matches NaN
    err, index, got, want = compare(a + [0, 0, 0.5], a, 1e-3, 1e-4)
    assert (err, index, got, want) == (0.5, (2,), 3.5, 3.0)
    assert compare(a * (1 + 1e-5), a, 1e-3, 0) is None
    assert compare(np.array([1, 2]), np.array([1, 3]), 1, 1)[1] == (1,)  # integers: exact
    assert compare(np.array(np.inf), np.array(np.inf), 0, 0) is None


def test_check_plan_gets_its_own_machine_code(tmp_path, monkeypatch):
    """A graph replanned with reuse=False has the same structural hash; the compile cache
    must not hand it the object compiled for the other plan (it would read wrong offsets)."""
    from graphc.codegen.backend import native_executable
    from graphc.interpreter import interpret
    from graphc.passes.memory import plan_memory

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))

    def chain(x):
        a = x.sum(1)
        b = (a * 2).sum()
        c = (x * b).sum(0)
        return (c * c).sum(), c

    x = np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)
    graph = graphc.compile(chain).trace(x).graph
    replanned = plan_memory(graph, reuse=False)
    assert replanned.meta["memory"].arena_bytes != graph.meta["memory"].arena_bytes
    native_executable(graph)([x])  # fills the cache with the reusing plan's object
    got = native_executable(replanned)([x])
    for g, e in zip(got, interpret(graph, [x]), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5)


@pytest.mark.slow
def test_check_of_the_reference_convnet_finds_a_fault_in_a_convolution():
    out = graphc_cli(
        "check", "convnet", "--input-shape", "2x3x32x32", "--steps", "1", "--fault", "k2_conv2d"
    )
    assert out.returncode == 1, out.stderr
    assert "[kernel k2_conv2d]" in out.stdout
    assert "models.py:23 in forward" in out.stdout
