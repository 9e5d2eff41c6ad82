"""`graphc inspect` through a subprocess, as users run it: every option, each TARGET kind, the
JSON schema, DOT that Graphviz renders, and one clear error for each kind of bad request."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphc.passes import STAGES

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "ir.schema.json"

MODEL = """\
import graphc.nn as nn
import graphc.nn.functional as F


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class NotAModel:
    pass


def scaled_sum(a, b):
    return (a * 2 + b.exp()).sum(1)
"""


def inspect_cli(*args, cwd=None):
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "graphc.cli", "inspect", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=cwd,
        timeout=300,
    )
    out.seconds = time.perf_counter() - t0
    return out


def ok(out):
    assert out.returncode == 0, out.stderr
    return out.stdout


def validate(doc):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates the JSON output")
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()), cls=jsonschema.Draft202012Validator)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "small.py"
    path.write_text(MODEL)
    return str(path)


@pytest.fixture(scope="module")
def convnet_all():
    """The reference ConvNet's training step after every pass, as text (shared)."""
    return inspect_cli("convnet", "--train", "--after", "all")


def test_list_passes():
    text = ok(inspect_cli("--list-passes"))
    names = [line.split()[0] for line in text.splitlines()]
    assert names == STAGES
    assert "symbolic reverse-mode differentiation" in text


def test_convnet_training_step_after_every_pass(convnet_all, record_property):
    text = ok(convnet_all)
    # Issue 6 asks for this under 2 s; it is measured here and reported, never asserted.
    record_property("inspect_convnet_train_all_seconds", round(convnet_all.seconds, 3))
    print(f"graphc inspect convnet --train --after all: {convnet_all.seconds:.2f} s")
    headers = re.findall(r"^# ---- IR after (\w+) ----$", text, re.M)
    assert headers == STAGES
    final = text.split("# ---- IR after plan_memory ----")[1]
    node_lines = [s for s in final.splitlines() if re.match(r"  %\d+: ", s)]
    assert len(node_lines) > 100
    for line in node_lines:  # type, op, and a source line on every node
        assert re.match(r"  %\d+: \w+\[[\d,]*\] = \w+\(", line), line
        assert re.search(
            r"(models\.py:\d+ in forward|<graphc train_step>:\d+ in train_step)$", line
        ), line
    assert "= conv2d(%inputs, %conv1.weight)  # k0_conv2d; " in final
    assert re.search(r"relu\(%\d+\)  # k0_conv2d, arena\[0:\d+\]; ", final)
    assert "in place over %conv1.weight" in final
    assert "# schedule:" in final and "# memory:" in final


def test_lstm_training_step_shows_its_loops():
    """An LSTM's recurrences print as scan nodes with their step graphs in place (and in
    JSON, as nested graphs the schema describes)."""
    text = ok(inspect_cli("lstm", "--train", "--input-shape", "4x12"))
    assert re.search(r"= scan\(.*body=body#[0-9a-f]{12}, num_carry=2, .*length=12\)", text)
    assert "\n    graph body(\n        %c0: f32[4,128] carry," in text
    assert "# scans:" in text and "steps of" in text
    doc = json.loads(
        ok(inspect_cli("lstm", "--train", "--input-shape", "4x12", "--format", "json"))
    )
    validate(doc)
    (scan,) = [n for n in doc["graphs"][0]["nodes"] if n["op"] == "scan"][:1]
    assert scan["attrs"]["body"]["body"]["stage"] == "body"


def test_convnet_json_with_reports_validates():
    doc = json.loads(
        ok(
            inspect_cli(
                "convnet",
                "--train",
                "--after",
                "all",
                "--format",
                "json",
                "--fusion",
                "--memory",
                "--flops",
            )
        )
    )
    validate(doc)
    assert (doc["target"], doc["mode"]) == ("convnet", "train")
    assert [g["stage"] for g in doc["graphs"]] == STAGES
    kernels = [k["name"] for k in doc["fusion"]["kernels"]]
    assert kernels[0] == "k0_conv2d"
    assert {k["name"] for k in doc["flops"]["kernels"]} == set(kernels)
    conv = doc["flops"]["kernels"][0]
    assert conv["flops"] == 2 * 64 * 6 * 28 * 28 * 3 * 5 * 5 + 2 * 64 * 6 * 28 * 28  # + bias, relu
    assert doc["memory"]["arena_bytes"] <= doc["memory"]["unplanned_bytes"]


def test_convnet_dot_parses_and_renders():
    text = ok(inspect_cli("convnet", "--after", "fuse", "--format", "dot"))
    assert text.startswith('digraph "inference after fuse" {')
    assert text.count("{") == text.count("}")
    declared = set(re.findall(r"^\s*(\w+) \[label=", text, re.M))
    for a, b in re.findall(r"^\s*(\w+) -> (\w+)", text, re.M):
        assert a in declared and b in declared
    assert 'label="k0_conv2d: epilogue: conv2d+bias+relu"' in text
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout, svg.stderr


def test_module_file_with_every_report(model_file):
    text = ok(
        inspect_cli(
            f"{model_file}:Small",
            "--input-shape",
            "4x8",
            "--train",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--fusion",
            "--memory",
            "--flops",
            "--llvm",
            "k0_matmul",
            "--asm",
            "k0_matmul",
            "--profile",
            "2",
        )
    )
    starts = [
        "fusion: ",
        "memory: arena ",
        "kernels (bytes: ",
        "; optimised LLVM IR of k0_matmul",
        "# assembly of k0_matmul",
        "profile: 2 steps; machine peak ",
    ]
    at = [text.index(f"\n\n{h}") + 2 if i else text.index(h) for i, h in enumerate(starts)]
    assert at == sorted(at) and at[0] == 0  # every section, in the documented order
    fusion, memory, flops, llvm, asm, profile = (
        text[a:b] for a, b in zip(at, at[1:] + [len(text)], strict=True)
    )
    assert "k0_matmul  [matmul]  epilogue: matmul+bias+relu" in fusion
    assert "fc1.weight.exp_avg" in memory  # Adam's state, updated in place
    assert "total: " in flops
    assert llvm.splitlines()[1].startswith("; k0_matmul runs @gk_") and "graphc_entry" not in llvm
    assert asm.splitlines()[1].startswith("# k0_matmul runs @gk_")
    assert asm.splitlines()[2].startswith("\t.globl\tgk_")
    assert re.search(r"^k0_matmul\s+matmul\s", profile, re.M)
    assert not text.startswith("graph ")  # only reports were asked for


def test_function_target_as_json_with_native_reports(model_file):
    doc = json.loads(
        ok(
            inspect_cli(
                f"{model_file}:scaled_sum",
                "--input-shape",
                "3x5,3x5",
                "--after",
                "traced",
                "--format",
                "json",
                "--llvm",
                "k0_loop",
                "--asm",
                "k0_loop",
                "--profile",
                "2",
            )
        )
    )
    validate(doc)
    assert doc["mode"] == "function"
    assert [g["stage"] for g in doc["graphs"]] == ["traced"]
    symbol = re.search(r"@(gk_\w+)", doc["llvm"]["text"]).group(1)
    assert doc["llvm"]["kernel"] == "k0_loop" and f"@{symbol}(" in doc["llvm"]["text"]
    assert doc["asm"]["kernel"] == "k0_loop" and f"{symbol}:" in doc["asm"]["text"]
    assert [k["name"] for k in doc["profile"]["kernels"]] == ["k0_loop"]


def test_inference_by_default_prints_the_final_ir(model_file, tmp_path):
    text = ok(inspect_cli(f"{model_file}:Small", "--input-shape", "4x8", cwd=tmp_path))
    assert text.startswith("graph inference(\n    %inputs: f32[4,8] input,")
    assert "IR after" not in text  # one stage: no header
    assert "small.py:12 in forward" in text


ERRORS = {
    "no target": ([], "give a TARGET: convnet, FILE.py:Class or FILE.py:function"),
    "unknown model": (
        ["resnet"],
        "TARGET must be one of convnet, lenet5, mlp, resnet20, transformer, lstm, mobilenet, "
        "autoencoder, FILE.py:Class",
    ),
    "missing file": (["nope.py:Net"], "nope.py is not a file"),
    "missing class": (["{model}:Big", "--input-shape", "4x8"], "has no Big; it defines Small"),
    "not a model": (["{model}:NotAModel"], "is a type, not a graphc.nn.Module class"),
    "missing input shape": (["{model}:Small"], "is a Module: give the batch shape"),
    "bad input shape": (["convnet", "--input-shape", "64x3x32"], "convnet does not accept"),
    "unknown pass": (["convnet", "--after", "fusion"], "unknown pass 'fusion'; --after takes"),
    "unknown kernel": (
        ["{model}:Small", "--input-shape", "4x8", "--llvm", "k9_conv2d"],
        "no kernel named 'k9_conv2d'; this step's kernels are: k0_matmul, ",
    ),
    "dot with reports": (["convnet", "--format", "dot", "--memory"], "draws the IR only"),
    "train a function": (["{model}:scaled_sum", "--train"], "compiled as written"),
    "lr without train": (["convnet", "--lr", "0.1"], "add --train"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_clear_message(case, model_file):
    args, message = ERRORS[case]
    out = inspect_cli(*[a.format(model=model_file) for a in args])
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stdout == ""
    assert out.stderr.startswith("graphc inspect: error: ")
    assert message in out.stderr
    assert "Traceback" not in out.stderr
