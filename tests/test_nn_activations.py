"""Activations (nn modules and nn.functional forms) against PyTorch: values and gradients,
eagerly and compiled, at random points, at every kink and boundary, and where a naive
formula would overflow; their derivatives against float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from test_nn_layers import check_parity

import graphc
import graphc.nn as nn
import graphc.nn.functional as F

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])

# name -> (constructor args, functional name, functional kwargs)
ACTIVATIONS = {
    "LeakyReLU": ((), "leaky_relu", {}),
    "LeakyReLU(0.2)": ((0.2,), "leaky_relu", {"negative_slope": 0.2}),
    "ReLU6": ((), "relu6", {}),
    "Hardtanh(-2,3)": ((-2.0, 3.0), "hardtanh", {"min_val": -2.0, "max_val": 3.0}),
    "ELU": ((), "elu", {}),
    "ELU(0.5)": ((0.5,), "elu", {"alpha": 0.5}),
    "GELU": ((), "gelu", {}),
    "GELU(tanh)": (("tanh",), "gelu", {"approximate": "tanh"}),
    "SiLU": ((), "silu", {}),
    "Hardswish": ((), "hardswish", {}),
    "Hardsigmoid": ((), "hardsigmoid", {}),
    "Softplus": ((), "softplus", {}),
    "Softplus(2,6)": ((2.0, 6.0), "softplus", {"beta": 2.0, "threshold": 6.0}),
    "LogSigmoid": ((), "logsigmoid", {}),
}


def _class(name: str) -> str:
    return name.split("(")[0]


def modules(torch, name):
    args = ACTIVATIONS[name][0]
    return getattr(nn, _class(name))(*args), getattr(torch.nn, _class(name))(*args)


# Every kink and boundary of the functions above, values just beside them, and magnitudes
# where exp overflows float32 (a discarded where() branch must not turn that into NaN).
SPECIAL = [-100.0, -30.0, -3.0, -2.0, -1.0, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 1.0]
SPECIAL += [2.0, 3.0, 2.9999998, 3.0000002, 3.5, 6.0, 6.5, 10.0, 20.0, 30.0, 100.0]


@MODES
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_module_matches_torch(torch, compiled, name):
    g, t = modules(torch, name)
    check_parity(torch, g, t, (3, 4, 5), compiled, rtol=2e-6, atol=1e-6)


def _values_and_grads(fn, x: np.ndarray, compiled: bool):
    def f(xt):
        out = fn(xt)
        out.sum().backward()
        return out

    xt = graphc.tensor(x, requires_grad=True)
    out = (graphc.compile(f) if compiled else f)(xt)
    return out.detach().numpy(), xt.grad.numpy()


@MODES
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_kinks_and_large_inputs_match_torch(torch, compiled, name):
    """At a kink the derivative is PyTorch's choice; nothing overflows into NaN."""
    _, fname, kwargs = ACTIVATIONS[name]
    x = np.array(SPECIAL, np.float32)
    xt = torch.tensor(x, requires_grad=True)
    want = getattr(torch.nn.functional, fname)(xt, **kwargs)
    want.sum().backward()
    out, grad = _values_and_grads(lambda v: getattr(F, fname)(v, **kwargs), x, compiled)
    # In the far negative tail GELU's 1 + erf(x) (or 1 + tanh) cancels, and float32 keeps
    # only absolute accuracy there (PyTorch's exact GELU at x = -3 is off by 1e-4 relative,
    # 5e-7 absolute). PyTorch's float64 run on the same inputs is the sharper oracle: graphc
    # is held to it at float32 rounding of O(1) terms, and to the float32 run beside it.
    x64 = torch.tensor(x.astype(np.float64), requires_grad=True)
    exact = getattr(torch.nn.functional, fname)(x64, **kwargs)
    exact.sum().backward()
    np.testing.assert_allclose(out, exact.detach().numpy(), rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(grad, x64.grad.numpy(), rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=2e-6, atol=1e-6)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_gradient_matches_finite_differences_in_float64(name, rng):
    """The VJP the composition's primitives give is the function's derivative (away from
    kinks, which the torch tests above pin down)."""
    _, fname, kwargs = ACTIVATIONS[name]
    fn = getattr(F, fname)
    x = rng.uniform(-5, 5, 40)
    x = x[np.min(np.abs(x[:, None] - np.array([-3.0, -2.0, 0.0, 3.0, 6.0])), axis=1) > 1e-3]
    xt = graphc.tensor(x, requires_grad=True)
    fn(xt, **kwargs).sum().backward()
    eps = 1e-6
    up = fn(graphc.tensor(x + eps), **kwargs).numpy()
    down = fn(graphc.tensor(x - eps), **kwargs).numpy()
    np.testing.assert_allclose(xt.grad.numpy(), (up - down) / (2 * eps), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float64_matches_torch_to_rounding(torch, approximate, rng):
    x = rng.standard_normal(1000) * 4
    want = torch.nn.functional.gelu(torch.tensor(x), approximate=approximate).numpy()
    got = F.gelu(graphc.tensor(x), approximate).numpy()
    # 1 + erf/tanh cancels in the negative tail: an ulp of 1, not of the result
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_elu_and_softplus_keep_the_digits_of_tiny_values(torch):
    x = np.array([-1e-6, -3e-8, -40.0, -90.0], np.float32)
    for fname in ("elu", "softplus", "logsigmoid"):
        want = getattr(torch.nn.functional, fname)(torch.tensor(x)).numpy()
        got = getattr(F, fname)(graphc.tensor(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=fname)


# ---- in place ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda F, x: F.leaky_relu(x, 0.1, inplace=True),
        lambda F, x: F.leaky_relu_(x, 0.1),
        lambda F, x: F.relu6(x, inplace=True),
        lambda F, x: F.hardtanh_(x, -0.5, 0.5),
        lambda F, x: F.elu(x, inplace=True),
        lambda F, x: F.elu_(x, 0.3),
        lambda F, x: F.silu(x, inplace=True),
        lambda F, x: F.hardswish(x, inplace=True),
        lambda F, x: F.hardsigmoid(x, inplace=True),
    ],
)
def test_inplace_forms_write_the_input(torch, call, rng):
    x = (rng.standard_normal((4, 5)) * 4).astype(np.float32)
    g, t = graphc.tensor(x), torch.tensor(x)
    out = call(F, g)
    call(torch.nn.functional, t)
    assert out is g
    np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=2e-6, atol=1e-7)


def test_inplace_modules_write_the_input():
    x = graphc.tensor([[-2.0, 0.5, 7.0]])
    for m in (nn.LeakyReLU(inplace=True), nn.ReLU6(inplace=True), nn.ELU(inplace=True)):
        y = graphc.tensor(x.numpy())
        assert m(y) is y
    y = graphc.tensor(x.numpy())
    nn.ReLU6(inplace=True)(y)
    np.testing.assert_array_equal(y.numpy(), [[0.0, 0.5, 6.0]])


# ---- PReLU ----------------------------------------------------------------------------------


@MODES
@pytest.mark.parametrize(
    "num_parameters, x_shape",
    [(1, (4, 3)), (3, (4, 3)), (3, (2, 3, 5, 4)), (1, (2, 3, 5, 4)), (1, (7,)), (5, (2, 5, 3))],
)
def test_prelu_matches_torch(torch, compiled, num_parameters, x_shape):
    g, t = nn.PReLU(num_parameters), torch.nn.PReLU(num_parameters)
    with torch.no_grad():  # distinct slopes per channel
        t.weight.copy_(torch.linspace(-0.3, 0.6, num_parameters))
    check_parity(torch, g, t, x_shape, compiled)


def test_prelu_defaults_and_state_dict_are_torchs(torch):
    g, t = nn.PReLU(4, init=0.1), torch.nn.PReLU(4, init=0.1)
    assert list(g.state_dict()) == list(t.state_dict()) == ["weight"]
    np.testing.assert_array_equal(g.weight.detach().numpy(), t.weight.detach().numpy())
    assert repr(g) == repr(t)
    assert g.weight.requires_grad


def test_prelu_weight_count_must_match_the_channels():
    where = "(?s)3 weights for 4 channel.*test_nn_activations.py"  # the user's line
    with pytest.raises(graphc.ShapeError, match=where):
        F.prelu(graphc.randn(2, 4), graphc.ones(3))
    with pytest.raises(graphc.ShapeError, match="2 weights for 1 channel"):
        F.prelu(graphc.randn(5), graphc.ones(2))


# ---- construction and errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.LeakyReLU(0.2, inplace=True),
        lambda nn: nn.ReLU6(inplace=True),
        lambda nn: nn.ReLU6(),
        lambda nn: nn.Hardtanh(-2.0, 3.0),
        lambda nn: nn.ELU(alpha=0.5),
        lambda nn: nn.GELU(approximate="tanh"),
        lambda nn: nn.SiLU(),
        lambda nn: nn.Softplus(beta=2.0, threshold=10.0),
        lambda nn: nn.PReLU(),
        lambda nn: nn.LogSigmoid(),
    ],
)
def test_repr_is_torchs(torch, make):
    assert repr(make(nn)) == repr(make(torch.nn))


def test_bad_arguments_are_reported():
    with pytest.raises(graphc.GraphcError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(graphc.randn(3), approximate="fast")
    with pytest.raises(graphc.GraphcError, match="min_val .* cannot be greater"):
        F.hardtanh(graphc.randn(3), 2.0, 1.0)
    with pytest.raises(ValueError, match="must be less than max_val"):
        nn.Hardtanh(1.0, 1.0)
