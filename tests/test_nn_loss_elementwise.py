"""Per-element losses against PyTorch (BCE, BCE with logits, smooth L1, Huber, KL divergence,
and the weights of L1/MSE): values and input gradients for every reduction and option,
eagerly and compiled, including the edge values where the formulas switch branches."""

from __future__ import annotations

import numpy as np
import pytest
from test_nn_loss import cases, loss_parity

import graphc
import graphc.nn as nn
import graphc.nn.functional as F


def _tensor_opts(torch, opts: dict, shape, rng):
    """Options that name tensors ('weight': shape) become random positive tensors."""
    g_kw, t_kw = {}, {}
    for k, v in opts.items():
        if k in ("weight", "pos_weight"):
            w = rng.uniform(0.2, 3.0, v).astype(np.float32)
            g_kw[k], t_kw[k] = graphc.tensor(w), torch.tensor(w)
        else:
            g_kw[k] = t_kw[k] = v
    return g_kw, t_kw


def _pair(torch, name, reduction, opts, shape, rng):
    g_kw, t_kw = _tensor_opts(torch, opts, shape, rng)
    return (
        getattr(nn, name)(reduction=reduction, **g_kw),
        getattr(torch.nn, name)(reduction=reduction, **t_kw),
    )


SHAPE = (4, 3, 5)


@cases([dict(), dict(weight=SHAPE), dict(weight=(5,))])
def test_bce(torch, compiled, reduction, opts):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.02, 0.98, SHAPE).astype(np.float32)
    x.reshape(-1)[:4] = [1e-6, 1 - 1e-6, 0.5, 0.25]
    y = rng.uniform(0, 1, SHAPE).astype(np.float32)
    y.reshape(-1)[:6] = [0.0, 1.0, 0.0, 1.0, 0.5, 0.0]
    g, t = _pair(torch, "BCELoss", reduction, opts, SHAPE, rng)
    loss_parity(torch, g, t, x, y, compiled)


def test_bce_at_certain_wrong_predictions_costs_100_like_torch(torch):
    x = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    loss_parity(
        torch, nn.BCELoss(reduction="none"), torch.nn.BCELoss(reduction="none"), x, y, False
    )
    got = F.binary_cross_entropy(graphc.tensor(x), graphc.tensor(y), reduction="none")
    np.testing.assert_array_equal(got.numpy(), [100.0, 100.0, 0.0, 0.0])


@cases([dict(), dict(weight=SHAPE), dict(pos_weight=(5,)), dict(weight=(5,), pos_weight=(5,))])
def test_bce_with_logits(torch, compiled, reduction, opts):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    x.reshape(-1)[:6] = [0.0, -0.0, 100.0, -100.0, 30.0, -30.0]  # 0: log_sigmoid's slope is 1/2
    y = rng.uniform(0, 1, SHAPE).astype(np.float32)
    y.reshape(-1)[:6] = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    g, t = _pair(torch, "BCEWithLogitsLoss", reduction, opts, SHAPE, rng)
    loss_parity(torch, g, t, x, y, compiled)


def test_bce_with_logits_matches_bce_of_sigmoid():
    rng = np.random.default_rng(3)
    x = graphc.tensor(rng.standard_normal((6, 2)).astype(np.float64))
    y = graphc.tensor(rng.uniform(0, 1, (6, 2)))
    a = F.binary_cross_entropy_with_logits(x, y).item()
    b = F.binary_cross_entropy(graphc.sigmoid(x), y).item()
    np.testing.assert_allclose(a, b, rtol=1e-12)


def _regression_inputs(rng, offsets):
    """x, y whose differences include exact values (0 and the branch points)."""
    x = rng.standard_normal(SHAPE).astype(np.float32) * 2
    y = rng.standard_normal(SHAPE).astype(np.float32) * 2
    for i, d in enumerate(offsets):
        y.reshape(-1)[i] = np.float32(0.5)
        x.reshape(-1)[i] = np.float32(0.5 + d)
    return x, y


@cases([dict(), dict(beta=0.5), dict(beta=0.0), dict(beta=2.0)])
def test_smooth_l1(torch, compiled, reduction, opts):
    rng = np.random.default_rng(4)
    beta = opts.get("beta", 1.0)
    x, y = _regression_inputs(rng, [0.0, beta, -beta, 0.25])
    g, t = _pair(torch, "SmoothL1Loss", reduction, opts, SHAPE, rng)
    loss_parity(torch, g, t, x, y, compiled)


@cases([dict(), dict(delta=0.5), dict(delta=2.0)])
def test_huber(torch, compiled, reduction, opts):
    rng = np.random.default_rng(5)
    delta = opts.get("delta", 1.0)
    x, y = _regression_inputs(rng, [0.0, delta, -delta, 0.25])
    g, t = _pair(torch, "HuberLoss", reduction, opts, SHAPE, rng)
    loss_parity(torch, g, t, x, y, compiled)


def test_huber_equals_smooth_l1_times_delta():
    rng = np.random.default_rng(6)
    x, y = (graphc.tensor(rng.standard_normal(20)) for _ in range(2))
    a = F.huber_loss(x, y, delta=0.7, reduction="none").numpy()
    b = F.smooth_l1_loss(x, y, beta=0.7, reduction="none").numpy()
    np.testing.assert_allclose(a, 0.7 * b, rtol=1e-12)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name, fn", [("mse", "mse_loss"), ("l1", "l1_loss"), ("huber", None)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_weights(torch, compiled, name, fn, reduction):
    rng = np.random.default_rng(7)
    x, y = _regression_inputs(rng, [0.0])
    w = rng.uniform(0.1, 2.0, SHAPE).astype(np.float32)
    fn = fn or "huber_loss"

    def g_loss(a, b):
        return getattr(F, fn)(a, b, reduction=reduction, weight=graphc.tensor(w))

    def t_loss(a, b):
        return getattr(torch.nn.functional, fn)(a, b, reduction=reduction, weight=torch.tensor(w))

    loss_parity(torch, g_loss, t_loss, x, y, compiled)


# Every combination eagerly; compiled, each formula (log_target or not) with each reduction
# that divides, and the plain target with the others (one native compile each).
KL_CASES = [
    pytest.param(compiled, reduction, log_target, id=f"{mode}-{reduction}-log_target={log_target}")
    for compiled, mode in ((False, "eager"), (True, "compiled"))
    for reduction in ("batchmean", "mean", "sum", "none")
    for log_target in (False, True)
    if not (compiled and log_target and reduction in ("sum", "none"))
]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("compiled, reduction, log_target", KL_CASES)
def test_kl_div(torch, compiled, reduction, log_target):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal(SHAPE)
    x = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    p = rng.uniform(0, 1, SHAPE)
    if not log_target:
        p.reshape(-1)[:3] = 0.0  # 0 log 0 = 0
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    y = np.log(p) if log_target else p
    g = nn.KLDivLoss(reduction=reduction, log_target=log_target)
    t = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)
    loss_parity(torch, g, t, x, y.astype(np.float32), compiled)


def test_kl_div_mean_warns_like_torch():
    x = graphc.zeros(2, 3)
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        F.kl_div(x, graphc.ones(2, 3))


# ---- deprecated arguments, errors ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("size_average, reduce", [(None, False), (False, None), (True, True)])
def test_legacy_size_average_and_reduce(torch, size_average, reduce):
    rng = np.random.default_rng(9)
    x = rng.uniform(0.1, 0.9, (3, 4)).astype(np.float32)
    y = rng.uniform(0, 1, (3, 4)).astype(np.float32)
    for name in ("BCELoss", "MSELoss", "SmoothL1Loss", "KLDivLoss"):
        g = getattr(nn, name)(size_average=size_average, reduce=reduce)
        t = getattr(torch.nn, name)(size_average=size_average, reduce=reduce)
        assert g.reduction == t.reduction, name
        loss_parity(torch, g, t, x, y, False)


def test_losses_take_torchs_positional_arguments(torch):
    """F.cross_entropy(x, y, weight, size_average, ignore_index, reduce, reduction, ...)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0])
    w = np.array([0.5, 2.0, 1.0], np.float32)
    args = (None, 2, None, "sum")  # size_average, ignore_index, reduce, reduction
    want = torch.nn.functional.cross_entropy(
        torch.tensor(x), torch.tensor(y), torch.tensor(w), *args
    )
    got = F.cross_entropy(graphc.tensor(x), graphc.tensor(y), graphc.tensor(w), *args)
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)
    t_mod = torch.nn.CrossEntropyLoss(torch.tensor(w), None, 2, None, "sum", 0.1)
    g_mod = nn.CrossEntropyLoss(graphc.tensor(w), None, 2, None, "sum", 0.1)
    loss_parity(torch, g_mod, t_mod, x, y, False)


def test_bad_inputs_are_reported_at_the_users_line():
    x = graphc.tensor([0.2, 1.5])
    with pytest.raises(graphc.GraphcError, match="(?s)between 0 and 1, got 1.5.*test_nn_loss_elem"):
        F.binary_cross_entropy(x, graphc.tensor([0.0, 1.0]))
    with pytest.raises(graphc.GraphcError, match="target should be between 0 and 1"):
        F.binary_cross_entropy(graphc.tensor([0.2]), graphc.tensor([2.0]))
    with pytest.raises(ValueError, match="target size \\[3\\] must be the same as input"):
        nn.BCEWithLogitsLoss()(graphc.zeros(2), graphc.zeros(3))
    with pytest.raises(graphc.GraphcError, match="'avg' is not a valid reduction"):
        nn.HuberLoss(reduction="avg")(graphc.zeros(2), graphc.zeros(2))
    with pytest.raises(graphc.GraphcError, match="negative values for beta"):
        F.smooth_l1_loss(graphc.zeros(2), graphc.zeros(2), beta=-1.0)
    with pytest.raises(graphc.GraphcError, match="non-positive values for delta"):
        F.huber_loss(graphc.zeros(2), graphc.zeros(2), delta=0.0)
    with pytest.raises(ValueError, match="weights and input must have the same size"):
        F.mse_loss(graphc.zeros(2, 3), graphc.zeros(2, 3), weight=graphc.ones(3))
    with pytest.raises(graphc.GraphcError, match="label_smoothing must be between"):
        F.cross_entropy(graphc.zeros(2, 3), graphc.tensor([0, 1]), label_smoothing=1.5)


def test_legacy_arguments_warn_as_in_torch():
    with pytest.warns(UserWarning, match="please use reduction='sum' instead"):
        nn.MSELoss(size_average=False)


def test_target_of_another_shape_warns_as_in_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(graphc.zeros(4, 1), graphc.zeros(4))


def test_bce_out_of_range_input_is_nan_when_compiled():
    """A compiled step cannot raise mid-kernel: values outside [0, 1] give NaN, not garbage."""
    f = graphc.compile(lambda x, y: F.binary_cross_entropy(x, y, reduction="none"))
    out = f(graphc.tensor([1.5, 0.5]), graphc.tensor([1.0, 1.0])).numpy()
    assert np.isnan(out[0]) and np.isfinite(out[1])
