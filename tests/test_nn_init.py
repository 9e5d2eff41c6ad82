"""nn.init and the layers' default initialisation: PyTorch's distributions, graphc's generator.

graphc draws from its own counter-based generator, so the numbers differ from PyTorch's; what
must agree is the distribution (bounds, moments) and the reproducibility under manual_seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
import graphc.nn as nn
from graphc.nn import init


def uniform_checks(values: np.ndarray, bound: float) -> None:
    """values ~ U(-bound, bound): inside the bounds, reaching near both ends, right moments."""
    n = values.size
    assert np.abs(values).max() <= bound
    assert values.max() > bound * (1 - 20 / n) and values.min() < -bound * (1 - 20 / n)
    sd = bound / math.sqrt(3)  # std of U(-b, b)
    assert abs(values.mean()) < 5 * sd / math.sqrt(n)
    assert abs(values.std() / sd - 1) < 5 * math.sqrt(0.8 / n)  # var of s^2/sigma^2 ~ 0.8/n
    # Equal-width bins hold equal shares (chi-square-like check, 5 sigma per bin).
    counts, _ = np.histogram(values, bins=10, range=(-bound, bound))
    assert np.all(np.abs(counts - n / 10) < 5 * math.sqrt(n / 10))


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda: nn.Linear(400, 120), 400),
        (lambda: nn.Linear(3, 2000), 3),
        (lambda: nn.Conv2d(6, 16, 5), 150),
        (lambda: nn.Conv2d(8, 12, (3, 2), groups=4), 2 * 3 * 2),
    ],
)
def test_default_init_is_kaiming_uniform_a_sqrt5(make, fan_in):
    layer = make()
    # kaiming_uniform(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in)
    bound = math.sqrt(2 / 6) * math.sqrt(3 / fan_in)
    assert math.isclose(bound, 1 / math.sqrt(fan_in))
    uniform_checks(layer.weight.detach().numpy().ravel(), bound)
    bias = layer.bias.detach().numpy()
    assert np.abs(bias).max() <= 1 / math.sqrt(fan_in) and bias.std() > 0


def test_weight_statistics_match_torchs_for_the_same_layer(torch):
    """Same distribution as PyTorch: compare the sample moments of a large layer."""
    g = nn.Linear(256, 4096).weight.detach().numpy().ravel()
    t = torch.nn.Linear(256, 4096).weight.detach().numpy().ravel()
    n = g.size
    assert abs(g.std() - t.std()) < 5 * t.std() * math.sqrt(0.8 / n) * math.sqrt(2)
    assert abs(np.abs(g).max() - np.abs(t).max()) < 1e-4


def test_batchnorm_init_is_ones_and_zeros():
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.detach().numpy(), np.ones(5, np.float32))
    np.testing.assert_array_equal(bn.bias.detach().numpy(), np.zeros(5, np.float32))
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(5, np.float32))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(5, np.float32))
    assert bn.num_batches_tracked.dtype == graphc.int64 and bn.num_batches_tracked.item() == 0


def test_manual_seed_reproduces_initialisation():
    def weights():
        return [p.detach().numpy().copy() for p in graphc.models.ConvNet().parameters()]

    graphc.manual_seed(42)
    a = weights()
    b = weights()  # the generator moved on: different weights
    graphc.manual_seed(42)
    c = weights()
    for x, y in zip(a, c, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["linear", "conv2d", "sigmoid", "tanh", "relu", "selu"])
def test_calculate_gain_matches_torch(torch, name):
    assert init.calculate_gain(name) == torch.nn.init.calculate_gain(name)


@pytest.mark.parametrize("slope", [None, 0.2, math.sqrt(5)])
def test_leaky_relu_gain_matches_torch(torch, slope):
    got = init.calculate_gain("leaky_relu", slope)
    assert math.isclose(got, torch.nn.init.calculate_gain("leaky_relu", slope), rel_tol=1e-15)


@pytest.mark.parametrize("shape", [(30, 40), (16, 6, 5, 5), (7, 3, 2)])
def test_fans_match_torch(torch, shape):
    expect = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(graphc.zeros(*shape)) == expect


def test_initialisers_distributions():
    w = graphc.zeros(300, 200)
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    uniform_checks(w.numpy().ravel(), math.sqrt(2) * math.sqrt(3 / 300))
    init.xavier_uniform_(w, gain=2.0)
    uniform_checks(w.numpy().ravel(), 2.0 * math.sqrt(6 / 500))
    init.uniform_(w, -0.5, 1.5)
    assert w.numpy().min() >= -0.5 and w.numpy().max() < 1.5
    n = w.numel()
    for fn, std in (
        (lambda: init.kaiming_normal_(w, nonlinearity="relu"), math.sqrt(2 / 200)),
        (lambda: init.xavier_normal_(w), math.sqrt(2 / 500)),
        (lambda: init.normal_(w, 3.0, 0.5), 0.5),
    ):
        fn()
        v = w.numpy().ravel()
        mean = 3.0 if std == 0.5 else 0.0
        assert abs(v.mean() - mean) < 5 * std / math.sqrt(n)
        assert abs(v.std() / std - 1) < 5 * math.sqrt(0.5 / n)
    init.constant_(w, 0.25)
    np.testing.assert_array_equal(w.numpy(), np.full((300, 200), 0.25, np.float32))
    init.zeros_(w)
    assert not w.numpy().any()
    init.ones_(w)
    assert (w.numpy() == 1).all()
    e = graphc.zeros(3, 4)
    init.eye_(e)
    np.testing.assert_array_equal(e.numpy(), np.eye(3, 4, dtype=np.float32))


def test_init_on_parameters_does_not_record_gradients():
    p = nn.Parameter(graphc.zeros(4, 4))
    init.kaiming_uniform_(p, a=math.sqrt(5))
    assert p.is_leaf and p.grad_fn is None and p.requires_grad
    (p * 2).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), np.full((4, 4), 2.0, np.float32))


def test_fan_of_a_vector_is_an_error_and_empty_tensors_are_left_alone():
    with pytest.raises(graphc.GraphcError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(graphc.zeros(5))
    layer = nn.Linear(0, 3)  # PyTorch allows it: nothing to initialise
    assert layer.weight.shape == (3, 0)
