"""Loss parity with PyTorch: values and input gradients for every reduction and option."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def loss_parity(torch, g_loss, t_loss, x, target, compiled, rtol=1e-5, atol=1e-6):
    """Compares loss(x, target) and d loss / d x (with a random cotangent for 'none')."""
    rng = np.random.default_rng(7)
    xt = torch.tensor(x, requires_grad=True)
    t_out = t_loss(xt, torch.tensor(target))
    cot = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
    (t_out * torch.tensor(cot)).sum().backward()

    def f(xg, tg, cg):
        out = g_loss(xg, tg)
        (out * cg).sum().backward()
        return out

    xg = graphc.tensor(x, requires_grad=True)
    g_out = (graphc.compile(f) if compiled else f)(xg, graphc.tensor(target), graphc.tensor(cot))
    assert tuple(g_out.shape) == tuple(t_out.shape)
    np.testing.assert_allclose(
        g_out.detach().numpy(), t_out.detach().numpy(), rtol=rtol, atol=atol, err_msg="loss"
    )
    np.testing.assert_allclose(
        xg.grad.numpy(), xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input grad"
    )


def class_targets(rng, shape, c, ignore=None):
    t = rng.integers(0, c, shape)
    if ignore is not None:
        t[rng.random(shape) < 0.3] = ignore
    return t.astype(np.int64)


REDUCTIONS = pytest.mark.parametrize("reduction", ["mean", "sum", "none"])


def cases(options: list[dict]):
    """(compiled, reduction, opts) combinations. Each compiled case costs a native compile, so
    under compile 'mean' (the reduction with the subtle denominators) is checked for every
    option and 'sum'/'none' for the plain loss; eagerly, everything."""
    out = []
    for opts in options:
        for reduction in ("mean", "sum", "none"):
            for compiled in (False, True):
                if compiled and opts and reduction != "mean":
                    continue
                mode = "compiled" if compiled else "eager"
                out.append(pytest.param(compiled, reduction, opts, id=f"{mode}-{reduction}-{opts}"))
    return pytest.mark.parametrize("compiled, reduction, opts", out)


CE_OPTIONS = [
    dict(),
    dict(weight=True),
    dict(ignore_index=2),
    dict(ignore_index=-100, _ignore=-100),
    dict(weight=True, ignore_index=1),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.25, weight=True),
    dict(label_smoothing=0.2, ignore_index=0, weight=True),
]


def _ce_kwargs(torch, opts, c, rng):
    """(graphc kwargs, torch kwargs, ignored target value or None)."""
    opts = dict(opts)
    ignore = opts.pop("_ignore", opts.get("ignore_index"))
    g_kw, t_kw = dict(opts), dict(opts)
    if opts.get("weight"):
        w = rng.uniform(0.2, 2.0, c).astype(np.float32)
        g_kw["weight"], t_kw["weight"] = graphc.tensor(w), torch.tensor(w)
    return g_kw, t_kw, ignore


@cases(CE_OPTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)], ids=["NC", "NCHW"])
def test_cross_entropy_class_indices(torch, compiled, reduction, opts, shape):
    rng = np.random.default_rng(1)
    c = shape[1]
    g_kw, t_kw, ignore = _ce_kwargs(torch, opts, c, rng)
    x = rng.standard_normal(shape).astype(np.float32) * 2
    target = class_targets(rng, shape[:1] + shape[2:], c, ignore)
    g = nn.CrossEntropyLoss(reduction=reduction, **g_kw)
    t = torch.nn.CrossEntropyLoss(reduction=reduction, **t_kw)
    loss_parity(torch, g, t, x, target, compiled)


@cases(
    [dict(), dict(weight=True), dict(label_smoothing=0.15), dict(label_smoothing=0.3, weight=True)]
)
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)], ids=["NC", "NCHW"])
def test_cross_entropy_probability_targets(torch, compiled, reduction, opts, shape):
    rng = np.random.default_rng(2)
    g_kw, t_kw, _ = _ce_kwargs(torch, opts, shape[1], rng)
    x = rng.standard_normal(shape).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    p /= p.sum(axis=1, keepdims=True)
    g = nn.CrossEntropyLoss(reduction=reduction, **g_kw)
    t = torch.nn.CrossEntropyLoss(reduction=reduction, **t_kw)
    loss_parity(torch, g, t, x, p, compiled)


def test_cross_entropy_unbatched(torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5).astype(np.float32)
    loss_parity(torch, nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), x, np.array(3), False)


@cases([dict(), dict(weight=True), dict(ignore_index=1, weight=True)])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)], ids=["NC", "NCHW"])
def test_nll_loss(torch, compiled, reduction, opts, shape):
    rng = np.random.default_rng(4)
    g_kw, t_kw, ignore = _ce_kwargs(torch, opts, shape[1], rng)
    x = rng.standard_normal(shape).astype(np.float32)
    target = class_targets(rng, shape[:1] + shape[2:], shape[1], ignore)
    g = nn.NLLLoss(reduction=reduction, **g_kw)
    t = torch.nn.NLLLoss(reduction=reduction, **t_kw)
    loss_parity(torch, g, t, x, target, compiled)


def test_log_softmax_then_nll_equals_cross_entropy():
    rng = np.random.default_rng(5)
    x = graphc.tensor(rng.standard_normal((8, 4)).astype(np.float32))
    y = graphc.tensor(rng.integers(0, 4, 8))
    a = F.nll_loss(F.log_softmax(x, 1), y).item()
    b = F.cross_entropy(x, y).item()
    np.testing.assert_allclose(a, b, rtol=1e-6)


@MODES
@REDUCTIONS
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss"])
def test_regression_losses(torch, compiled, reduction, name):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    y = rng.standard_normal((4, 3, 2)).astype(np.float32)
    g = getattr(nn, name)(reduction=reduction)
    t = getattr(torch.nn, name)(reduction=reduction)
    loss_parity(torch, g, t, x, y, compiled)


def test_all_targets_ignored_gives_nan_like_torch(torch):
    x = np.zeros((3, 4), np.float32)
    y = np.full(3, -100, np.int64)
    t = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y)).item()
    g = F.cross_entropy(graphc.tensor(x), graphc.tensor(y)).item()
    assert np.isnan(t) and np.isnan(g)


def test_bad_targets_raise():
    x = graphc.randn(4, 3)
    with pytest.raises(graphc.ShapeError, match="expected target of shape"):
        F.cross_entropy(x, graphc.zeros(5, dtype=graphc.int64))
    with pytest.raises(graphc.GraphcError, match="out of range"):
        F.cross_entropy(x, graphc.tensor([0, 1, 2, 3]))
    with pytest.raises(graphc.GraphcError, match="not a valid reduction"):
        F.mse_loss(x, x, reduction="avg")
