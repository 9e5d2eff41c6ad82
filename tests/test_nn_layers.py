"""Per-layer parity with PyTorch: forward values and input/parameter gradients, eager and compiled.

Each case builds the same layer in both frameworks, copies torch's parameters into graphc with
load_state_dict, runs one forward pass, pulls a random cotangent back through it and compares
the output, the input gradient and every parameter gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as nn


def run_graphc(module, x: np.ndarray, cot: np.ndarray, compiled: bool):
    """(output, input grad, {param name: grad}) of sum(module(x) * cot)."""
    for p in module.parameters():
        p.grad = None

    def fwd_bwd(xt, ct):
        out = module(xt)
        (out * ct).sum().backward()
        return out

    fn = graphc.compile(fwd_bwd) if compiled else fwd_bwd
    xt = graphc.tensor(x, requires_grad=True)
    out = fn(xt, graphc.tensor(cot))
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


def run_torch(torch, module, x: np.ndarray, cot: np.ndarray):
    xt = torch.tensor(x, requires_grad=True)
    out = module(xt)
    (out * torch.tensor(cot)).sum().backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


def check_parity(torch, g_mod, t_mod, x_shape, compiled, rtol=1e-5, atol=1e-6, seed=0):
    rng = np.random.default_rng(seed)
    g_mod.load_state_dict(t_mod.state_dict())
    x = rng.standard_normal(x_shape).astype(np.float32)
    with torch.no_grad():
        out_shape = t_mod(torch.tensor(x)).shape
    cot = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    t_out, t_dx, t_grads = run_torch(torch, t_mod, x, cot)
    g_out, g_dx, g_grads = run_graphc(g_mod, x, cot, compiled)
    assert g_out.shape == t_out.shape
    np.testing.assert_allclose(g_out, t_out, rtol=rtol, atol=atol, err_msg="output")
    np.testing.assert_allclose(g_dx, t_dx, rtol=rtol, atol=atol, err_msg="input grad")
    assert list(g_grads) == list(t_grads)
    for k in t_grads:
        np.testing.assert_allclose(g_grads[k], t_grads[k], rtol=rtol, atol=atol, err_msg=k)


MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


# ---- Linear and Conv2d ----------------------------------------------------------------------


@MODES
@pytest.mark.parametrize(
    "args, x_shape",
    [
        ((7, 5), (4, 7)),
        ((7, 5, False), (4, 7)),
        ((6, 3), (2, 3, 6)),  # leading batch dims
        ((6, 3), (6,)),  # unbatched
    ],
)
def test_linear(torch, compiled, args, x_shape):
    check_parity(torch, nn.Linear(*args), torch.nn.Linear(*args), x_shape, compiled)


CONV_CASES = [
    (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 8, 8)),
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2), (2, 3, 9, 9)),
    (
        dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=1),
        (2, 3, 7, 8),
    ),
    (dict(in_channels=2, out_channels=4, kernel_size=3, padding="same"), (2, 2, 6, 7)),
    (dict(in_channels=2, out_channels=4, kernel_size=3, padding="same", dilation=2), (2, 2, 9, 9)),
    (dict(in_channels=2, out_channels=4, kernel_size=3, padding="valid"), (1, 2, 6, 6)),
    (
        dict(in_channels=2, out_channels=3, kernel_size=3, dilation=(2, 1), padding=(2, 0)),
        (2, 2, 9, 9),
    ),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1), (2, 4, 6, 6)),
    (dict(in_channels=4, out_channels=4, kernel_size=3, groups=4), (2, 4, 6, 6)),  # depthwise
    (dict(in_channels=3, out_channels=5, kernel_size=5, bias=False, stride=3), (2, 3, 11, 11)),
    (dict(in_channels=3, out_channels=2, kernel_size=3, padding=1), (3, 6, 6)),  # unbatched
]


@MODES
@pytest.mark.parametrize(
    "kwargs, x_shape", CONV_CASES, ids=lambda v: str(v) if isinstance(v, tuple) else None
)
def test_conv2d(torch, compiled, kwargs, x_shape):
    check_parity(torch, nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs), x_shape, compiled)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_same_padding_even_kernel(torch):
    # An even kernel needs asymmetric 'same' padding (PyTorch pads the extra row at the end).
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=4, padding="same")
    check_parity(torch, nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs), (2, 2, 7, 6), False)


# ---- pooling --------------------------------------------------------------------------------

MAXPOOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=2),
    dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),
]


@MODES
@pytest.mark.parametrize("kwargs", MAXPOOL_CASES, ids=str)
def test_max_pool2d(torch, compiled, kwargs):
    # Distinct values: with ties PyTorch's choice of winner is an implementation detail.
    check_parity(
        torch, nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), (2, 3, 9, 8), compiled
    )


AVGPOOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
    dict(kernel_size=2, stride=2, ceil_mode=True, divisor_override=3),
]


@MODES
@pytest.mark.parametrize("kwargs", AVGPOOL_CASES, ids=str)
def test_avg_pool2d(torch, compiled, kwargs):
    check_parity(
        torch, nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), (2, 3, 9, 8), compiled
    )


@MODES
def test_pool_unbatched_input(torch, compiled):
    check_parity(torch, nn.MaxPool2d(2), torch.nn.MaxPool2d(2), (3, 6, 6), compiled)
    check_parity(torch, nn.AvgPool2d(2), torch.nn.AvgPool2d(2), (3, 6, 6), compiled)


# ---- activations, softmax, flatten ----------------------------------------------------------


@MODES
@pytest.mark.parametrize("name", ["ReLU", "Sigmoid", "Tanh", "Identity"])
def test_activations(torch, compiled, name):
    check_parity(torch, getattr(nn, name)(), getattr(torch.nn, name)(), (3, 4, 5), compiled)


@MODES
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax(torch, compiled, name, dim):
    check_parity(torch, getattr(nn, name)(dim), getattr(torch.nn, name)(dim), (3, 4, 5), compiled)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)])
def test_softmax_implicit_dim_is_torchs(torch, shape):
    """dim=None (deprecated in PyTorch) picks dim 0 for 0/1/3-D input and dim 1 otherwise."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with pytest.warns(UserWarning):
        expect = torch.nn.Softmax()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(nn.Softmax()(graphc.tensor(x)).numpy(), expect, rtol=1e-6)
    with pytest.warns(UserWarning):
        expect = torch.nn.functional.log_softmax(torch.tensor(x), dim=None).numpy()
    got = nn.functional.log_softmax(graphc.tensor(x)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


@MODES
@pytest.mark.parametrize("args", [(), (0,), (1, 2), (2, -1), (0, -2)])
def test_flatten(torch, compiled, args):
    check_parity(torch, nn.Flatten(*args), torch.nn.Flatten(*args), (2, 3, 4, 5), compiled)


def test_activation_inplace_matches(torch):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    g, t = graphc.tensor(x), torch.tensor(x)
    out = nn.ReLU(inplace=True)(g)
    assert out is g
    torch.nn.ReLU(inplace=True)(t)
    np.testing.assert_array_equal(g.numpy(), t.numpy())
    g2 = graphc.tensor(x)
    assert nn.functional.relu_(g2) is g2
    np.testing.assert_array_equal(g2.numpy(), t.numpy())


# ---- Dropout --------------------------------------------------------------------------------


@MODES
def test_dropout_identity_when_p0_or_eval(compiled):
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    for drop in (nn.Dropout(0.0), nn.Dropout(0.7).eval()):
        xt = graphc.tensor(x, requires_grad=True)

        def f(xt, drop=drop):
            out = drop(xt)
            (out * 2).sum().backward()
            return out

        out = (graphc.compile(f) if compiled else f)(xt)
        np.testing.assert_array_equal(out.detach().numpy(), x)
        np.testing.assert_array_equal(xt.grad.numpy(), np.full_like(x, 2.0))


@MODES
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_training_statistics(compiled, p):
    n = 20000
    drop = nn.Dropout(p)
    xt = graphc.ones(n, requires_grad=True)

    def f(xt):
        out = drop(xt)
        out.sum().backward()
        return out

    out = (graphc.compile(f) if compiled else f)(xt).detach().numpy()
    kept = out != 0
    # Binomial(n, 1-p): 5 standard deviations of the kept fraction.
    tol = 5 * np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < tol
    # Survivors are scaled by 1/(1-p), computed in float32 as PyTorch's CPU kernel does.
    np.testing.assert_array_equal(out[kept], np.float32(1) / np.float32(1 - p))
    # The gradient is the same mask and scale.
    np.testing.assert_array_equal(xt.grad.numpy(), out)


@MODES
def test_dropout_reproducible_with_manual_seed(compiled):
    drop = nn.Dropout(0.5)
    f = graphc.compile(lambda x: drop(x)) if compiled else drop
    x = graphc.ones(4096)
    graphc.manual_seed(123)
    a, b = f(x).numpy(), f(x).numpy()
    graphc.manual_seed(123)
    c = f(x).numpy()
    assert not np.array_equal(a, b)  # fresh mask each call
    np.testing.assert_array_equal(a, c)


def test_dropout_p1_zeroes_everything():
    x = graphc.randn(5, 5)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).numpy(), np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


# ---- BatchNorm ------------------------------------------------------------------------------

BN_CASES = [
    ("BatchNorm2d", dict(), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(momentum=None), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(affine=False), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(bias=False), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(track_running_stats=False), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(momentum=0.3, eps=1e-3), (2, 3, 4, 4)),
    ("BatchNorm1d", dict(), (8, 5)),
    ("BatchNorm1d", dict(), (4, 5, 7)),
    ("BatchNorm1d", dict(momentum=None, affine=False), (8, 5)),
]


def _bn_pair(torch, name, kwargs, rng):
    c = 3 if name == "BatchNorm2d" else 5
    g, t = getattr(nn, name)(c, **kwargs), getattr(torch.nn, name)(c, **kwargs)
    with torch.no_grad():  # non-trivial affine parameters
        if t.weight is not None:
            t.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c).astype(np.float32)))
        if t.bias is not None:
            t.bias.copy_(torch.tensor(rng.standard_normal(c).astype(np.float32)))
    g.load_state_dict(t.state_dict())
    return g, t


@MODES
@pytest.mark.parametrize("name, kwargs, x_shape", BN_CASES, ids=str)
def test_batchnorm_train_then_eval(torch, compiled, name, kwargs, x_shape):
    rng = np.random.default_rng(1)
    g, t = _bn_pair(torch, name, kwargs, rng)
    # Three training steps (running stats and num_batches_tracked evolve), then eval.
    for step in range(3):
        x = (rng.standard_normal(x_shape) * 2 + 1).astype(np.float32)
        cot = rng.standard_normal(x_shape).astype(np.float32)
        t_out, t_dx, t_grads = run_torch(torch, t, x, cot)
        g_out, g_dx, g_grads = run_graphc(g, x, cot, compiled)
        np.testing.assert_allclose(g_out, t_out, rtol=1e-5, atol=1e-5, err_msg=f"out {step}")
        np.testing.assert_allclose(g_dx, t_dx, rtol=1e-4, atol=1e-5, err_msg=f"dx {step}")
        for k in t_grads:
            np.testing.assert_allclose(g_grads[k], t_grads[k], rtol=1e-4, atol=1e-5, err_msg=k)
        for p in t.parameters():
            p.grad = None
    t_state, g_state = t.state_dict(), g.state_dict()
    assert list(g_state) == list(t_state)
    for k in t_state:
        np.testing.assert_allclose(g_state[k].numpy(), t_state[k].numpy(), rtol=1e-6, err_msg=k)
    g.eval()
    t.eval()
    x = rng.standard_normal(x_shape).astype(np.float32)
    cot = rng.standard_normal(x_shape).astype(np.float32)
    t_out, t_dx, t_grads = run_torch(torch, t, x, cot)
    g_out, g_dx, g_grads = run_graphc(g, x, cot, compiled)
    np.testing.assert_allclose(g_out, t_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_dx, t_dx, rtol=1e-5, atol=1e-5)
    for k in t_grads:
        np.testing.assert_allclose(g_grads[k], t_grads[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_batchnorm_rejects_bad_input():
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(graphc.randn(3, 4, 4))
    with pytest.raises(graphc.GraphcError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(graphc.randn(1, 3))
