"""graphc.inspection's native views from Python: one kernel's LLVM IR and assembly, the
per-kernel profile, and GRAPHC_DEBUG=3/4 (LLVM IR, assembly) when a native step compiles."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.nn.functional as F
from graphc.inspection import InspectError

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "ir.schema.json"


def layer(x, w, b):
    return F.relu(x @ w.t() + b)


@pytest.fixture(scope="module")
def insp():
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s, dtype=np.float32) for s in ((5, 7), (6, 7), (6,))]
    return graphc.compile(layer).inspect(*args)


def test_kernel_names(insp):
    assert insp.kernels == ["k0_loop", "k1_matmul"]


@pytest.mark.parametrize("kernel", ["k0_loop", "k1_matmul"])
def test_llvm_ir_of_one_kernel_compiled_on_its_own(insp, kernel):
    text = insp.llvm(kernel)
    header = text.splitlines()[0]
    assert header.startswith(f"; {kernel} runs @gk_")  # its code, named by its digest
    symbol = re.search(r"@(gk_\w+)", header).group(1)
    defines = [s for s in text.splitlines() if s.startswith("define ")]
    assert len(defines) == 1 and f"@{symbol}(" in defines[0]
    assert "graphc_entry" not in text  # the entry (and the other kernels) are left out
    assert text.splitlines()[-1] == "}" or "declare " in text
    assert insp.llvm(kernel) == text  # deterministic


def test_assembly_of_one_kernel_is_its_symbol_section(insp):
    text = insp.asm("k1_matmul")
    header, *lines = text.splitlines()
    assert header.startswith("# k1_matmul runs @gk_")
    symbol = re.search(r"@(gk_\w+)", header).group(1)
    assert lines[0].split() == [".globl", symbol]
    assert f"{symbol}:" in lines
    assert any(s.split()[:2] == [".size", f"{symbol},"] for s in lines)
    assert re.search(r"@(gk_\w+)", insp.llvm("k0_loop")).group(1) not in text
    assert "graphc_entry" not in text
    assert any(s.strip().startswith(("ret", "retq")) for s in lines)


def test_unknown_kernel_lists_the_valid_ones(insp):
    with pytest.raises(InspectError, match=r"no kernel named 'k9_conv2d'.*k0_loop, k1_matmul"):
        insp.llvm("k9_conv2d")


def test_profile_times_every_kernel_and_rates_it_against_numpy(insp):
    jsonschema = pytest.importorskip("jsonschema")
    report = insp.profile(3)
    assert sorted(k.name for k in report.kernels) == ["k0_loop", "k1_matmul"]
    times = [k.nanoseconds for k in report.kernels]
    assert times == sorted(times, reverse=True) and all(t > 0 for t in times)
    flops = {k.name: k.flops for k in report.kernels}
    assert flops == {"k0_loop": 0, "k1_matmul": 2 * 5 * 6 * 7 + 2 * 5 * 6}
    assert report.peak_gflops > 0 and report.steps == 3
    text = report.text()
    assert text.startswith("profile: 3 steps; machine peak ")
    assert "k1_matmul" in text and "% peak" in text
    doc = json.loads(
        json.dumps(
            {
                "format": "graphc.inspect",
                "version": 1,
                "target": "layer",
                "mode": "inference",
                "profile": report.to_json(),
            }
        )
    )
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))


def test_profile_leaves_the_callers_arrays_alone():
    w = graphc.nn.Parameter(graphc.ones(3))
    opt = graphc.optim.SGD([w], lr=0.5)

    @graphc.compile
    def step(x):
        opt.zero_grad()
        loss = (x * w).sum()
        loss.backward()
        opt.step()
        return loss

    step.inspect(graphc.ones(3)).profile(2)
    np.testing.assert_array_equal(w.detach().numpy(), np.ones(3, np.float32))


DEBUG_SCRIPT = """
import graphc
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction
f = CompiledFunction(lambda x: (x * 2).exp().sum(), backend=native_executable)
print(f(graphc.ones(3, 4)).item())
"""


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_graphc_debug_ladder(level, tmp_path):
    env = dict(os.environ, GRAPHC_DEBUG=str(level), GRAPHC_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", DEBUG_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    assert float(out.stdout) == pytest.approx(12 * np.exp(2.0), rel=1e-5)
    err = out.stderr
    assert "graphc: compiled <lambda> in " in err  # 1: times
    assert re.search(
        r"backend: cache miss; .*lower .* ms, .*llvm optimize .* ms, llvm codegen", err
    )
    assert re.search(r"kernels: 1 in the schedule, 1 distinct code \(0 from the cache", err)
    assert ("IR after plan_memory ----" in err) == (level >= 2)
    assert ("k0_loop, arena[" in err) == (level >= 2)  # annotated, as graphc inspect prints it
    assert ("<lambda>: LLVM IR (entry) ----" in err) == (level >= 3)
    assert ('define i32 @"graphc_entry"' in err) == (level >= 3)
    assert ("<lambda>: assembly (entry) ----" in err) == (level >= 4)
    assert ("graphc_entry:" in err) == (level >= 4)


def test_convolutions_say_how_llvm_optimises_them():
    """Tiled conv2d runs the light pass list; the weight gradient keeps -O1; the padded
    conv's inf/NaN path is a call to its own out-of-line function, not inlined loops."""
    graphc.manual_seed(0)
    conv = graphc.nn.Conv2d(16, 16, 3, padding=1)
    opt = graphc.optim.SGD(conv.parameters(), lr=0.1)

    @graphc.compile
    def step(x):
        opt.zero_grad()
        loss = conv(x).relu().sum()
        loss.backward()
        opt.step()
        return loss

    insp = step.inspect(graphc.ones(8, 16, 12, 12))
    by_kind = {k.split("_", 1)[1]: k for k in insp.kernels}
    forward = insp.llvm(by_kind["conv2d"])
    assert forward.splitlines()[0].endswith("(light passes)")
    symbol = re.search(r"@(gk_\w+)", forward).group(1)
    assert re.search(rf"call (fastcc )?void @{symbol}\.exact\(", forward)
    wgrad = insp.llvm(by_kind["conv2d_weight_grad"])
    assert wgrad.splitlines()[0].endswith("(-O1)")
    symbol = re.search(r"@(gk_\w+)", wgrad).group(1)
    assert re.search(rf"call (fastcc )?void @{symbol}\.exact\(", wgrad)
