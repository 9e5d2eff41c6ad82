"""Shape mistakes inside a model raise ShapeError naming the model's file and line, eagerly
and under graphc.compile (where the message also names the call that was being traced)."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.errors import ShapeError

HERE = os.path.basename(__file__)


def line_of(fn, marker: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


class Model(nn.Module):
    """Each `kind` makes one layer meet an input it cannot take."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 5)  # expects 12 features
        self.conv = nn.Conv2d(4, 8, 3)  # expects 4 channels
        self.bn = nn.BatchNorm2d(7)  # expects 7 channels
        self.seq = nn.Sequential(nn.Flatten(), nn.Linear(10, 3))  # expects 10 features

    def forward(self, x, kind):
        if kind == "linear":
            return self.fc(x)  # <linear>
        if kind == "conv":
            return self.conv(x)  # <conv>
        if kind == "bn":
            return self.bn(x)  # <bn>
        if kind == "sequential":
            return self.seq(x)  # <sequential>
        return F.max_pool2d(x, 5)  # <pool>


CASES = [
    ("linear", (4, 13), ["13 features", "expects 12"]),
    ("conv", (2, 3, 8, 8), ["expects the input to have 4 channels", "got 3"]),
    ("bn", (2, 8, 4, 4), ["8 channels", "running_mean has shape [7]"]),
    ("sequential", (2, 3, 2, 2), ["12 features", "expects 10"]),
    ("pool", (1, 2, 3, 3), ["too small for kernel"]),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kind, shape, words", CASES, ids=[c[0] for c in CASES])
def test_shape_error_names_the_model_line(compiled, kind, shape, words):
    model = Model()
    fn = graphc.compile(model) if compiled else model
    with pytest.raises(ShapeError) as err:
        fn(graphc.randn(*shape), kind)
    msg = str(err.value)
    for w in words:
        assert w in msg
    assert f"{HERE}:{line_of(Model.forward, f'<{kind}>')} in forward" in msg
    if compiled:
        assert "while tracing" in msg


class WrongInFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 5)
        self.fc = nn.Linear(6 * 13 * 13, 10)  # should be 6 * 14 * 14 after pooling

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))  # the bad line


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_wrong_in_features_in_a_training_step(compiled):
    net = WrongInFeatures()
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().numpy().copy() for p in net.parameters()]

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    step = graphc.compile(step) if compiled else step
    x, y = graphc.randn(4, 3, 32, 32), graphc.zeros(4, dtype=graphc.int64)
    with pytest.raises(ShapeError) as err:
        step(x, y)
    msg = str(err.value)
    assert "1176 features" in msg and "1014" in msg  # 6*14*14 given, 6*13*13 expected
    assert f"{HERE}:{line_of(WrongInFeatures.forward, 'the bad line')}" in msg
    # Nothing was updated by the failed step.
    for p, b in zip(net.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.detach().numpy(), b)


def test_loss_target_errors_name_the_loss_line():
    logits = graphc.randn(4, 10)
    with pytest.raises(ShapeError) as err:
        nn.CrossEntropyLoss()(logits, graphc.zeros(5, dtype=graphc.int64))  # <loss>
    assert f"{HERE}:{line_of(test_loss_target_errors_name_the_loss_line, '<loss>')}" in str(
        err.value
    )
    with pytest.raises(ShapeError, match="weight tensor should be defined"):
        F.cross_entropy(logits, graphc.zeros(4, dtype=graphc.int64), weight=graphc.ones(3))
