"""`graphc bench`: the command end to end through a subprocess on a tiny configuration, its JSON
fields and their consistency, the FLOP count against the analytic one, and the pieces (twin,
check, statistics). No test looks at how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from graphc.bench import timing
from graphc.bench.check import check_training
from graphc.bench.config import BenchConfig, BenchError, Workload
from graphc.bench.contenders import GraphcContender, TorchContender
from graphc.bench.workload import (
    WorkloadData,
    count_flops,
    initial_state,
    make_batch,
    num_classes,
)
from graphc.models import MLP, ConvNet, LeNet5, TextLSTM, TextTransformer

# One thread: on a shared machine, 2-thread PyTorch can take seconds per step (OpenMP waits).
TINY = "--steps 2 --rounds 2 --warmup 1 --rss-steps 1 --threads 1 --quiet".split()


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphc.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---- analytic FLOPs (anchors.md's table: dense conv/linear work, 1 MAC = 2 FLOPs) ----------


def conv_macs(c_in, c_out, k, out_hw):
    return c_in * c_out * k * k * out_hw * out_hw


def analytic_dense_flops(layers, batch):
    """layers: (forward MACs per image, whether the input gradient is needed). A training step
    does the forward, the weight gradient (same MACs) and, unless the layer reads the network's
    input, the input gradient (same MACs again)."""
    per_image = sum(macs * (3 if dx else 2) for macs, dx in layers)
    return 2 * per_image * batch


CONVNET_LAYERS = [
    (conv_macs(3, 6, 5, 28), False),
    (conv_macs(6, 16, 5, 10), True),
    (400 * 120, True),
    (120 * 84, True),
    (84 * 10, True),
]
LENET5_LAYERS = [
    (conv_macs(1, 6, 5, 28), False),
    (conv_macs(6, 16, 5, 10), True),
    (400 * 120, True),
    (120 * 84, True),
    (84 * 10, True),
]
MLP_LAYERS = [(3072 * 512, False), (512 * 512, True), (512 * 10, True)]


def test_analytic_count_is_the_anchor():
    assert analytic_dense_flops(CONVNET_LAYERS, 1) == 2 * 1_602_360
    assert round(analytic_dense_flops(CONVNET_LAYERS, 64) / 1e5) == 2051  # 205.1 MFLOP


def workload(model="convnet", batch=4, kind="train", optimizer="sgd", lr=0.001):
    return Workload(kind, model, None, batch, optimizer, lr, 0.9, 0, "interpreter", 1)


def data_for(cls, w, shape):
    x, y = make_batch(w.batch_size, shape, 10, 0)
    return WorkloadData(initial_state(cls, None, 0), x, y, 10)


@pytest.mark.parametrize(
    "model, cls, shape, layers",
    [
        ("convnet", ConvNet, (3, 32, 32), CONVNET_LAYERS),
        ("lenet5", LeNet5, (1, 28, 28), LENET5_LAYERS),
        ("mlp", MLP, (3, 32, 32), MLP_LAYERS),
    ],
)
def test_flops_of_the_optimised_graph_match_the_analytic_count(model, cls, shape, layers):
    w = workload(model, batch=4)
    c = GraphcContender(w, data_for(cls, w, shape))
    c.run()
    flops = count_flops(c.graph())
    assert flops["dense"] == analytic_dense_flops(layers, 4)
    assert flops["full"] > flops["dense"]


# ---- pieces ---------------------------------------------------------------------------------


def test_summary_statistics_and_round_ratios():
    rounds = [[1_000_000, 3_000_000, 2_000_000], [4_000_000, 5_000_000, 6_000_000]]
    s = timing.summarize(rounds)
    assert s["median_ms"] == 3.5 and s["min_ms"] == 1.0 and s["max_ms"] == 6.0
    assert s["q1_ms"] == np.quantile(np.arange(1, 7), 0.25)
    assert s["round_medians_ms"] == [2.0, 5.0] and s["timed_calls"] == 6
    ratios = timing.round_ratios([[4, 4], [10, 10]], [[2, 2], [10, 10]])
    assert ratios == [2.0, 1.0]


def test_interleave_runs_every_contender_the_same_number_of_times():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def f():
            calls[name] += 1

        return f

    samples = timing.interleave({n: bump(n) for n in calls}, warmup=2, rounds=3, steps=4)
    assert calls == {"a": 14, "b": 14}
    assert [len(r) for r in samples["a"]] == [4, 4, 4]


def test_config_rejects_what_cannot_run():
    with pytest.raises(BenchError, match="--steps"):
        BenchConfig(steps=0)
    with pytest.raises(BenchError, match="--no-train needs --inference"):
        BenchConfig(train=False)
    with pytest.raises(BenchError, match="--backend"):
        BenchConfig(backend="gpu")


def test_check_catches_a_wrong_update():
    w = workload()
    data = data_for(ConvNet, w, (3, 32, 32))
    good = GraphcContender(w, data, compiled=False)
    wrong = GraphcContender(workload(lr=0.002), data)  # twice the step: a "wrong gradient"
    result = check_training(wrong, good, data.state)
    assert not result["passed"]
    assert any("first update" in p for p in result["problems"])
    again = check_training(
        GraphcContender(w, data), GraphcContender(w, data, compiled=False), data.state
    )
    assert again["passed"], again["problems"]


class _Fixed:
    """A contender whose two steps give fixed losses and a fixed first update."""

    def __init__(self, name: str, update: float, loss: float = 1.0):
        self.name, self.update, self.loss = name, update, loss

    def run(self):
        return self.loss

    def parameters(self):
        return {"w": np.array([1.0 + self.update, 2.0])}


def test_check_against_an_exact_run_allows_the_references_own_rounding():
    """With a float64 run, graphc may be as far from it as NOISE times the float32
    reference is (a deep network's rounding), but not more."""
    initial = {"w": np.array([1.0, 2.0])}
    exact = _Fixed("torch-eager (float64)", update=1.0)
    reference = _Fixed("torch-eager", update=1.01)  # 1% off by its own rounding
    near = check_training(_Fixed("graphc", update=0.97), reference, initial, exact)
    assert near["passed"], near["problems"]  # 3% off the exact update: within 5 x 1%
    far = check_training(_Fixed("graphc", update=0.9), reference, initial, exact)
    assert not far["passed"] and "first update of w differs by 1.00e-01" in far["problems"][0]
    assert "torch-eager's own: 1.00e-02" in far["problems"][0]
    wrong_loss = check_training(_Fixed("graphc", 1.0, loss=1.5), reference, initial, exact)
    assert any("step 1 loss" in p for p in wrong_loss["problems"])


@pytest.mark.torch
def test_torch_twin_has_the_same_state_dict_layout():
    pytest.importorskip("torch")
    from graphc.bench.twin import torch_twin

    twin = torch_twin(ConvNet)()
    ours = ConvNet().state_dict()
    theirs = twin.state_dict()
    assert list(ours) == list(theirs)
    assert all(tuple(ours[k].shape) == tuple(theirs[k].shape) for k in ours)


def test_graphc_float64_contender_is_the_exact_answer_without_torch():
    """Without PyTorch, graphc's eager mode in float64 is what float32 rounding is measured
    against; it trains the same model from the same weights, in double precision."""
    w = workload()
    data = data_for(ConvNet, w, (3, 32, 32))
    exact = GraphcContender(w, data, compiled=False, float64=True)
    eager = GraphcContender(w, data, compiled=False)
    result = check_training(eager, exact, data.state)
    assert result["passed"], result["problems"]
    assert result["worst_update_rel_diff"] < 1e-3  # float32 rounding only
    assert all(v.dtype == np.float64 for v in exact.parameters().values())


@pytest.mark.torch
def test_torch_contender_matches_graphc_from_the_same_weights():
    pytest.importorskip("torch")
    from graphc.bench.twin import torch_twin

    w = workload()
    shape = (3, 32, 32)
    x, y = make_batch(4, shape, 10, 0)
    data = WorkloadData(initial_state(ConvNet, torch_twin(ConvNet), 0), x, y, 10)
    result = check_training(GraphcContender(w, data), TorchContender(w, data), data.state)
    assert result["passed"], result["problems"]


@pytest.mark.torch
@pytest.mark.parametrize("model, cls", [("transformer", TextTransformer), ("lstm", TextLSTM)])
def test_text_models_train_on_token_batches_like_torch(model, cls):
    """The text models take int64 token ids: the batch, the class count and the check
    against PyTorch (on the models' twins) all work on them."""
    pytest.importorskip("torch")
    from graphc.bench.twin import torch_twin

    w = workload(model, batch=3)
    x, y = make_batch(3, (6,), 4, 0, cls)
    assert x.dtype == np.int64 and x.shape == (3, 6) and 1 <= x.min() and x.max() < 60
    assert num_classes(cls, (6,), 0) == 4
    data = WorkloadData(initial_state(cls, torch_twin(cls), 0), x, y, 4)
    subject = GraphcContender(w, data)
    result = check_training(subject, TorchContender(w, data), data.state)
    assert result["passed"], result["problems"]
    if cls is TextLSTM:  # the recurrent products are counted once per step of their loops
        counted = count_flops(subject.graph())["dense"]
        outside = sum(
            2 * n.type.numel * n.inputs[0].shape[0 if n.attrs["trans_a"] else 1]
            for n in subject.graph().nodes
            if n.op == "matmul"
        )
        # per layer and step: h @ W_hh^T forwards, dgates @ W_hh backwards (W_hh's own
        # gradient is one product after the loop): 2 x 3 x 512 x 128 each
        layers, steps, product = 2, 6, 2 * 3 * 512 * 128
        assert counted == outside + layers * steps * 2 * product


# ---- the command end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_json(tmp_path_factory):
    """One tiny run of the whole protocol (startup probes included), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "result.json"
    torch_args = ["--no-torch-compile"] if has_torch() else ["--no-torch"]
    proc = bench(
        "--backend",
        "interpreter",
        "--batch-size",
        "4",
        "--inference",
        *torch_args,
        *TINY,
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "graphc bench:" in proc.stdout and "training step" in proc.stdout  # the table
    return json.loads(out.read_text())


def test_json_has_the_promised_fields(run_json):
    r = run_json
    assert r["schema"] == "graphc-bench/1"
    assert r["config"]["threads"] >= 1 and r["config"]["backend"] == "interpreter"
    assert r["peak"]["gflops"] > 0 and r["peak"]["median_gflops"] > 0
    assert [w["kind"] for w in r["workloads"]] == ["train", "inference"]
    train, infer = r["workloads"]
    assert train["batch_size"] == 4 and infer["batch_size"] == 1
    assert train["check"]["passed"] and infer["check"]["passed"]
    assert train["flops"]["dense"] == analytic_dense_flops(CONVNET_LAYERS, 4)
    assert train["flops"]["anchor_dense"] == train["flops"]["dense"]
    assert train["flops"]["full"] > train["flops"]["dense"] and train["flops"]["basis"] == "dense"
    expected = {"graphc", "torch-eager"} if has_torch() else {"graphc"}
    for w in (train, infer):
        assert set(w["contenders"]) == expected


def test_json_times_are_positive_and_consistent(run_json):
    peak = run_json["peak"]["gflops"]
    for w in run_json["workloads"]:
        eager = w["contenders"].get("torch-eager")
        for c in w["contenders"].values():
            assert 0 < c["min_ms"] <= c["q1_ms"] <= c["median_ms"] <= c["q3_ms"] <= c["max_ms"]
            assert c["timed_calls"] == 4 and len(c["round_medians_ms"]) == 2
            assert c["images_per_s"] == pytest.approx(w["batch_size"] / c["median_ms"] * 1e3)
            gflops = w["flops"]["dense"] / c["median_ms"] / 1e6
            assert c["gflops"] == pytest.approx(gflops)
            assert c["pct_of_peak"] == pytest.approx(100 * gflops / peak)
            assert c["first_call_in_timing_process_s"] > 0
            if eager is None:
                assert c["ratio_vs_torch_eager"] is None
            else:
                ratio = eager["median_ms"] / c["median_ms"]
                assert c["ratio_vs_torch_eager"] == pytest.approx(ratio, rel=1e-12)
                lo, hi = c["round_ratio_range"]
                assert 0 < lo <= hi
            if w["kind"] == "train":
                assert np.isfinite(c["first_loss"]) and np.isfinite(c["final_loss"])


def test_json_startup_probes(run_json):
    train = run_json["workloads"][0]
    for c in train["contenders"].values():
        for phase in ("cold", "warm"):
            p = c["startup"][phase]
            assert p["first_call_s"] > 0 and p["setup_s"] >= 0
            assert p["start_to_first_step_s"] > p["first_call_s"]
            assert p["peak_rss_mb"] > 10 and p["steps"] == 2
        assert c["peak_rss_mb"] == c["startup"]["cold"]["peak_rss_mb"]
    g = train["contenders"]["graphc"]["startup"]["cold"]["compile"]["graphc_seconds"]
    assert "trace" in g and "autodiff" in g


def test_table_states_graphcs_cold_and_warm_compile(run_json):
    from graphc.bench.report import format_result

    text = format_result(run_json)
    line = next(s for s in text.splitlines() if s.strip().startswith("graphc compile:"))
    startup = run_json["workloads"][0]["contenders"]["graphc"]["startup"]
    for phase in ("cold", "warm"):
        seconds = startup[phase]["compile"]["graphc_seconds"]
        total, trace = sum(seconds.values()), seconds["trace"]
        assert f"{phase} {total:.2f}s (trace {trace:.2f}s, passes " in line
    assert text.count("graphc compile:") == 1  # training only: inference has no probes


def test_without_torch_graphc_runs_alone(tmp_path):
    out = tmp_path / "r.json"
    proc = bench(
        "--backend",
        "interpreter",
        "--batch-size",
        "2",
        "--no-torch",
        "--no-startup",
        *TINY,
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    w = json.loads(out.read_text())["workloads"][0]
    assert list(w["contenders"]) == ["graphc"]
    assert w["check"]["reference"] == "graphc-eager" and w["initialisation"] == "graphc-default"
    # a deep model's float32 rounding is judged against a float64 run, as with PyTorch
    assert w["check"]["exact"] == "graphc-eager (float64)"
    assert w["contenders"]["graphc"]["startup"] is None


USER_MODEL = """
import graphc.nn as nn
import graphc.nn.functional as F


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.fc1(x.flatten(1)))
        if nn.__name__.startswith("torch") and SKEW:
            x = x * 1.01  # the twin computes something else: the check must refuse
        return self.fc2(x)
"""


def user_model(tmp_path, skew: bool) -> list[str]:
    path = tmp_path / "tiny.py"
    path.write_text(f"SKEW = {skew}\n" + USER_MODEL)
    return ["--model", f"{path}:Tiny", "--input-shape", "3,2,2", "--batch-size", "3"]


@pytest.mark.torch
def test_numbers_of_a_wrong_result_are_refused(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    args = user_model(tmp_path, skew=True)
    proc = bench(*args, "--no-torch-compile", "--no-startup", *TINY, "--json", str(out))
    assert proc.returncode == 1
    assert "does not compute what torch-eager computes" in proc.stderr
    assert "first update of fc2.weight" in proc.stderr
    assert not out.exists()


@pytest.mark.torch
@pytest.mark.slow
def test_a_user_model_file(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    args = user_model(tmp_path, skew=False)
    proc = bench(*args, "--no-torch-compile", "--no-startup", *TINY, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    w = json.loads(out.read_text())["workloads"][0]
    assert w["num_classes"] == 5 and w["input_shape"] == [3, 2, 2]
    assert set(w["contenders"]) == {"graphc", "torch-eager"}
    # fc1 reads the network's input: no input gradient there
    assert w["flops"]["dense"] == 2 * 3 * (12 * 16 * 2 + 16 * 5 * 3)


def test_usage_errors_exit_1_with_a_message():
    proc = bench("--no-train")
    assert proc.returncode == 1 and "--no-train needs --inference" in proc.stderr
    proc = bench("--batch-size", "0")
    assert proc.returncode == 2 and "positive" in proc.stderr
