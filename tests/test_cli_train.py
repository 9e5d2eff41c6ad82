"""`graphc train` end to end: a subprocess run with its outputs, resume equivalence (bitwise),
Ctrl-C in a subprocess, the partial-batch traces, real-format data and the error messages."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import cli
from graphc.training import loop

SMALL = ["--train-size", "96", "--test-size", "40", "--batch-size", "32", "--progress", "lines"]
REPO = Path(__file__).resolve().parents[1]

USER_MODEL = """
import graphc.nn as nn
import graphc.nn.functional as F


class SmallNet(nn.Module):
    '''Dropout draws from graphc's generator: resuming must restore its state too.'''

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 15 * 15, 10)

    def forward(self, x):
        x = self.drop(F.relu(self.conv(x)))
        return self.fc(x.flatten(1))


class GrayNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.view(-1, 28 * 28))


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()


class NotAModule:
    pass
"""


def run(args, capsys) -> tuple[int, str, str]:
    rc = cli.main(["train", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    return path


def final_state(path) -> dict[str, np.ndarray]:
    ckpt = graphc.load(path)
    arrays = {f"model.{k}": v.numpy() for k, v in ckpt["model"].items()}
    for i, st in ckpt["optimizer"]["state"].items():
        for k, v in st.items():
            arrays[f"opt.{i}.{k}"] = np.asarray(v.numpy() if isinstance(v, graphc.Tensor) else v)
    return arrays, ckpt


def assert_bitwise_equal(path_a, path_b) -> None:
    a, ckpt_a = final_state(path_a)
    b, ckpt_b = final_state(path_b)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"
    ha, hb = ckpt_a["history"], ckpt_b["history"]
    for key in ("epoch", "step", "train_loss", "test_loss", "test_accuracy"):
        assert ha[key] == hb[key], key
    assert ha["step_loss"].tobytes() == hb["step_loss"].tobytes()
    np.testing.assert_array_equal(ckpt_a["rng"], ckpt_b["rng"])


# ---- end to end in a subprocess ------------------------------------------------------------


def test_train_end_to_end_subprocess(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (graphc[plot])")
    ckpt, log, plot = tmp_path / "run.ckpt", tmp_path / "run.json", tmp_path / "curves.png"
    cmd = [sys.executable, "-m", "graphc.cli", "train", *SMALL, "--epochs", "2"]
    cmd += ["--checkpoint", str(ckpt), "--log-json", str(log), "--plot", str(plot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("graphc train: ConvNet (62,006 parameters) on builtin data")
    assert any(line.startswith("epoch 1/2: train loss ") for line in lines)
    assert "test accuracy" in lines[-2] and lines[-1].startswith("done: test accuracy")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(log.read_text())
    assert doc["status"] == "finished" and doc["steps"] == 6
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2]
    assert doc["config"]["model"] == "convnet" and doc["config"]["lr"] == 0.03
    assert all(0 <= e["test_accuracy"] <= 1 and e["train_loss"] > 0 for e in doc["epochs"])
    ck = graphc.load(ckpt)
    assert ck["epoch"] == 2 and ck["phase"] == "train" and ck["step"] == 6
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "run.ckpt", "run.json"]


def test_sigint_saves_a_valid_checkpoint_and_resume_matches(tmp_path, capsys):
    ckpt = tmp_path / "int.ckpt"
    args = ["--train-size", "3200", "--test-size", "40", "--batch-size", "32", "--epochs", "1"]
    cmd = [sys.executable, "-m", "graphc.cli", "train", *args, "--progress", "lines"]
    proc = subprocess.Popen(
        [*cmd, "--checkpoint", str(ckpt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        for line in proc.stderr:  # the first progress line comes after step 1 of 100
            if " step " in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: finishing the current step" in err and "Traceback" not in err
    assert "interrupted at epoch 1, step" in out and "graphc train --resume --checkpoint" in out
    saved = graphc.load(ckpt)
    assert saved["epoch"] == 0 and saved["phase"] == "train" and 1 <= saved["batch"] < 100

    rc, out, _ = run([*args, "--checkpoint", str(ckpt), "--resume"], capsys)
    assert rc == 0 and "resuming from" in out
    reference = tmp_path / "ref.ckpt"
    assert run([*args, "--checkpoint", str(reference)], capsys)[0] == 0
    assert_bitwise_equal(ckpt, reference)


# ---- resume equivalence in process ---------------------------------------------------------


def interrupt_during_training(monkeypatch, epoch: int, step: int) -> None:
    original = loop.Progress.update

    def update(self, done, *args, **kwargs):
        original(self, done, *args, **kwargs)
        if self.label.startswith(f"epoch {epoch}/") and done == step:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(loop.Progress, "update", update)


def interrupt_during_evaluation(monkeypatch, epoch: int) -> None:
    original = loop.Trainer._evaluate

    def evaluate(self):
        if self.state.epoch + 1 == epoch:
            signal.raise_signal(signal.SIGINT)
        return original(self)

    monkeypatch.setattr(loop.Trainer, "_evaluate", evaluate)


@pytest.mark.parametrize(
    "where",
    ["train epoch 2 step 2", "train epoch 1 step 3", "eval epoch 1", "between runs"],
)
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(
    tmp_path, capsys, monkeypatch, model_file, where
):
    common = [*SMALL, "--model", f"{model_file}:SmallNet", "--augment", "--seed", "5"]
    reference = tmp_path / "ref.ckpt"
    assert run([*common, "--epochs", "2", "--checkpoint", str(reference)], capsys)[0] == 0

    ckpt = tmp_path / "resumed.ckpt"
    with monkeypatch.context() as m:
        first_epochs = "2"
        if where.startswith("train"):
            _, e, _, s = where.split()[1:]
            interrupt_during_training(m, int(e), int(s))
        elif where.startswith("eval"):
            interrupt_during_evaluation(m, int(where.split()[-1]))
        else:
            first_epochs = "1"
        rc, out, _ = run([*common, "--epochs", first_epochs, "--checkpoint", str(ckpt)], capsys)
    assert rc == (0 if where == "between runs" else 130), out
    rc, out, _ = run(["--epochs", "2", "--checkpoint", str(ckpt), "--resume"], capsys)
    assert rc == 0, out
    assert "resuming from" in out
    assert_bitwise_equal(ckpt, reference)


def test_partial_last_batch_compiles_once_per_shape(tmp_path, capsys):
    log = tmp_path / "log.json"
    args = ["--train-size", "100", "--test-size", "40", "--batch-size", "32", "--epochs", "3"]
    rc, _, _ = run([*args, "--checkpoint", str(tmp_path / "c"), "--log-json", str(log)], capsys)
    assert rc == 0
    doc = json.loads(log.read_text())
    # 100 = 3 x 32 + 4 and 40 = 32 + 8: two shapes each, traced in epoch 1 and reused
    assert doc["compiled_train_shapes"] == 2 and doc["compiled_eval_shapes"] == 2
    assert doc["steps"] == 12
    ckpt = graphc.load(tmp_path / "c")
    losses = ckpt["history"]["step_loss"]
    sizes = np.array([32, 32, 32, 4] * 3)
    # the epoch loss is the mean over samples: each step's mean weighted by its batch size
    expected = [
        float(np.dot(losses[i : i + 4].astype(np.float64), sizes[:4]) / 100) for i in (0, 4, 8)
    ]
    np.testing.assert_allclose(ckpt["history"]["train_loss"], expected, rtol=1e-6)


def test_resume_options_and_nothing_to_do(tmp_path, capsys):
    ckpt = str(tmp_path / "c")
    assert run([*SMALL, "--epochs", "1", "--checkpoint", ckpt, "--lr", "0.01"], capsys)[0] == 0
    rc, out, err = run(["--epochs", "1", "--checkpoint", ckpt, "--resume"], capsys)
    assert rc == 0 and "nothing to do" in out and "--epochs N with N > 1" in out
    rc, _, err = run(["--epochs", "2", "--checkpoint", ckpt, "--resume", "--lr", "0.1"], capsys)
    assert rc == 1 and "--lr 0.1 differs from the checkpoint" in err and "0.01" in err
    rc, _, err = run(["--checkpoint", str(tmp_path / "none"), "--resume"], capsys)
    assert rc == 1 and "there is no checkpoint" in err and "none" in err
    other = tmp_path / "other.ckpt"
    graphc.save({"model": {}}, other)
    rc, _, err = run(["--checkpoint", str(other), "--resume"], capsys)
    assert rc == 1 and "not a `graphc train` checkpoint" in err


# ---- data and models -----------------------------------------------------------------------


def test_real_format_data_sets(tmp_path, capsys):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):  # batch 20: one shape each
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (mnist / f"{prefix}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes() + images.tobytes()
        )
        (mnist / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes() + labels.tobytes()
        )
    rc, out, err = run(
        f"--data mnist:{mnist} --epochs 1 --batch-size 20 --checkpoint {tmp_path}/m".split(), capsys
    )
    assert rc == 0, err
    assert "LeNet5" in out and "40 train / 20 test images of 1x28x28" in out

    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, 8)],
        }
        (cifar / name).write_bytes(pickle.dumps(batch, protocol=2))
    args = f"--data cifar10:{cifar.parent} --epochs 1 --batch-size 32 --train-size 32"
    rc, out, err = run([*args.split(), "--checkpoint", str(tmp_path / "c")], capsys)
    assert rc == 0, err
    assert "ConvNet" in out and "32 train / 8 test images of 3x32x32" in out


def test_text_models_on_builtin_and_file_data(tmp_path, capsys):
    """A text model without --data trains on the built-in text task, with Adam; a text data
    directory (train.tsv, test.tsv) gives the model its vocabulary and classes."""
    args = "--epochs 1 --batch-size 32 --train-size 64 --test-size 32 --progress none"
    rc, out, err = run(
        ["--model", "lstm", *args.split(), "--checkpoint", str(tmp_path / "a")], capsys
    )
    assert rc == 0, err
    assert "TextLSTM" in out and "on builtin-text data: 64 train / 32 test sentences of 32" in out
    assert "adam lr=0.001" in out
    text = tmp_path / "reviews"
    text.mkdir()
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "great", "dull"]

    def lines(n):
        return "".join(
            f"{rng.choice(['pos', 'neg', 'mixed'])}\t{' '.join(rng.choice(words, 5))}\n"
            for _ in range(n)
        )

    (text / "train.tsv").write_text(lines(40))
    (text / "test.tsv").write_text(lines(20))
    args = f"--model transformer --data text:{text} --seq-len 8 --epochs 1 --batch-size 20"
    rc, out, err = run([*args.split(), "--checkpoint", str(tmp_path / "b")], capsys)
    assert rc == 0, err
    assert "TextTransformer" in out and "40 train / 20 test sentences of 8 tokens, 3 classes" in out
    rc, _, err = run(["--model", "convnet", "--data", "builtin-text", *SMALL], capsys)
    assert rc == 1 and "does not accept the builtin-text data's 32-token sentences" in err


def test_user_model_errors(tmp_path, capsys, model_file):
    ckpt = ["--checkpoint", str(tmp_path / "c"), *SMALL]
    cases = [
        (
            f"{model_file}:GrayNet",
            ["does not accept the builtin data's 3x32x32 images", str(model_file)],
        ),
        (f"{model_file}:Missing", ["has no class Missing", "it defines SmallNet, GrayNet"]),
        (f"{model_file}:NeedsArgs", ["could not construct NeedsArgs()", "no arguments"]),
        (f"{model_file}:NotAModule", ["is not a graphc.nn.Module subclass"]),
        (f"{tmp_path}/absent.py:Net", ["absent.py does not exist"]),
        (
            "resnet",
            [
                "--model must be one of convnet, lenet5, mlp, resnet20, transformer, lstm, "
                "mobilenet, autoencoder or FILE.py:ClassName"
            ],
        ),
    ]
    for spec, fragments in cases:
        rc, _, err = run(["--model", spec, *ckpt], capsys)
        assert rc == 1, spec
        assert err.startswith("graphc train: error: ")
        for fragment in fragments:
            assert fragment in err, (spec, err)
    broken = tmp_path / "broken.py"
    broken.write_text("import graphc\n\nx = 1 / 0\n")
    rc, _, err = run(["--model", f"{broken}:Net", *ckpt], capsys)
    assert rc == 1 and "broken.py failed (line 3): ZeroDivisionError" in err


def test_option_errors(tmp_path, capsys, monkeypatch):
    ckpt = ["--checkpoint", str(tmp_path / "c")]
    cases = [
        (["--data", "imagenet"], "--data must be one of builtin, cifar10:DIR, mnist:DIR"),
        (["--data", f"cifar10:{tmp_path}/nothing"], "CIFAR-10 not found"),
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum applies to --optimizer sgd"),
        (
            ["--checkpoint", str(tmp_path / "no" / "dir" / "c"), *SMALL, "--epochs", "1"],
            "does not exist; create it first",
        ),
    ]
    for args, fragment in cases:
        rc, _, err = run([*ckpt, *args], capsys)
        assert rc == 1 and fragment in err, (args, err)
    rc, _, err = run([*ckpt, *SMALL, "--lr", "10000"], capsys)
    assert rc == 1 and "training diverged: the loss is nan" in err and "smaller --lr" in err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    rc, _, err = run([*ckpt, "--plot", str(tmp_path / "p.png")], capsys)
    assert rc == 1 and "pip install 'graphc[plot]'" in err


def test_cli_help_and_registry(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--model",
        "--data",
        "--epochs",
        "--batch-size",
        "--lr",
        "--momentum",
        "--optimizer",
        "--workers",
        "--seed",
        "--threads",
        "--checkpoint",
        "--resume",
        "--plot",
        "--log-json",
    ):
        assert flag in out


def test_threads_option_is_passed_through(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRAPHC_NUM_THREADS", raising=False)
    calls = []
    monkeypatch.setattr(graphc, "set_num_threads", calls.append, raising=False)
    args = [*SMALL, "--epochs", "1", "--threads", "1", "--workers", "0"]
    rc, _, _ = run([*args, "--checkpoint", str(tmp_path / "c")], capsys)
    assert rc == 0 and os.environ["GRAPHC_NUM_THREADS"] == "1" and calls == [1]


@pytest.mark.slow
def test_builtin_data_is_learnable_in_one_epoch(tmp_path, capsys):
    log = tmp_path / "log.json"
    # ~the default 10,000 images (156 steps); smaller sets may sit on the initial plateau
    args = f"--train-size 9984 --test-size 512 --epochs 1 --checkpoint {tmp_path}/c"
    rc, _, _ = run([*args.split(), "--log-json", str(log)], capsys)
    assert rc == 0
    accuracy = json.loads(log.read_text())["epochs"][0]["test_accuracy"]
    assert accuracy > 0.25  # chance is 0.1; seeds 0-3 reach 0.39-0.69


def test_repo_layout_has_the_console_script():
    text = (REPO / "pyproject.toml").read_text()
    assert 'graphc = "graphc.cli:main"' in text and "graphc.commands" in text
