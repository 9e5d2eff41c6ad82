"""Optimizers and schedules against torch.optim, with the model taken out of the loop.

Both optimizers receive the same parameters and the same sequence of gradients, so any
difference is the update rule's own. Every option of SGD, Adam, AdamW, RMSprop, Adagrad and
Adadelta runs with its defaults where not varied (Adam's eps=1e-8 included), eagerly and
inside a compiled step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
import graphc.optim as goptim

SHAPES = [(7, 5), (5,), (3, 2, 2, 2), ()]
STEPS = 12
MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def gradient_sequence(seed: int = 0, steps: int = STEPS) -> list[list[np.ndarray]]:
    """Gradients of mixed magnitudes, including exact zeros and tiny values (Adam's eps)."""
    rng = np.random.default_rng(seed)
    seq = []
    for _ in range(steps):
        grads = []
        for shape in SHAPES:
            g = rng.standard_normal(shape) * 10.0 ** rng.integers(-9, 1, shape)
            g = np.where(rng.random(shape) < 0.1, 0.0, g)
            grads.append(np.asarray(g, np.float32))
        seq.append(grads)
    return seq


def initial_params(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), np.float32) for s in SHAPES]


def run_torch(torch, make, grads_seq, groups=None):
    params = [torch.nn.Parameter(torch.tensor(a)) for a in initial_params()]
    opt = make(torch.optim, groups(params) if groups else params)
    history = []
    for grads in grads_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history, opt


def run_graphc(make, grads_seq, compiled, groups=None):
    params = [graphc.nn.Parameter(graphc.tensor(a)) for a in initial_params()]
    opt = make(goptim, groups(params) if groups else params)

    def step(*grads):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()

    fn = graphc.compile(step) if compiled else step
    history = []
    for grads in grads_seq:
        fn(*[graphc.tensor(g) for g in grads])
        history.append([p.detach().numpy().copy() for p in params])
    return history, opt, fn


# Eagerly, SGD's arithmetic is reproduced bit for bit. Adam's denominator takes a square
# root (so do RMSprop's, Adagrad's and Adadelta's), and PyTorch's vectorised float32 sqrt is
# not correctly rounded (measured: 0.6% of random inputs come out one ulp low), so their
# parameters may differ in their last bits.
# Native code is compiled with fast-math contraction and reciprocal division
# (codegen/scalar.py), so compiled steps may differ in the last bits too (relative to the
# size of an update, ~lr, hence the absolute part: an ulp of a 0.01 update is ~1e-9, and
# ten steps of them add up).
EXACT = dict(rtol=0, atol=0)
ULPS = dict(rtol=1e-6, atol=1e-8)
COMPILED_ULPS = dict(rtol=2e-6, atol=2e-8)


def tolerance(name: str, compiled: bool) -> dict:
    if compiled:
        return COMPILED_ULPS
    return EXACT if name.startswith("sgd") else ULPS


def assert_histories_match(got, want, rtol, atol):
    for step, (g_params, t_params) in enumerate(zip(got, want, strict=True)):
        for i, (g, t) in enumerate(zip(g_params, t_params, strict=True)):
            np.testing.assert_allclose(g, t, rtol=rtol, atol=atol, err_msg=f"step {step} param {i}")


CONFIGS = {
    "sgd": lambda o, p: o.SGD(p, lr=0.1),
    "sgd_momentum": lambda o, p: o.SGD(p, lr=0.1, momentum=0.9),
    "sgd_dampening": lambda o, p: o.SGD(p, lr=0.05, momentum=0.8, dampening=0.4),
    "sgd_nesterov": lambda o, p: o.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "sgd_weight_decay": lambda o, p: o.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01),
    "sgd_maximize": lambda o, p: o.SGD(p, lr=0.05, momentum=0.9, maximize=True),
    "adam": lambda o, p: o.Adam(p),
    "adam_lr_betas_eps": lambda o, p: o.Adam(p, lr=0.01, betas=(0.5, 0.9), eps=1e-6),
    "adam_weight_decay": lambda o, p: o.Adam(p, lr=0.01, weight_decay=0.1),
    "adam_amsgrad": lambda o, p: o.Adam(p, lr=0.01, amsgrad=True),
    "adam_maximize": lambda o, p: o.Adam(p, lr=0.01, maximize=True),
    "adam_decoupled": lambda o, p: o.Adam(
        p, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True
    ),
    "adamw": lambda o, p: o.AdamW(p, lr=0.01),
    "adamw_amsgrad_wd": lambda o, p: o.AdamW(p, lr=0.01, weight_decay=0.5, amsgrad=True),
    "rmsprop": lambda o, p: o.RMSprop(p),
    "rmsprop_alpha_eps_wd": lambda o, p: o.RMSprop(
        p, lr=0.003, alpha=0.9, eps=1e-6, weight_decay=0.1
    ),
    "rmsprop_momentum": lambda o, p: o.RMSprop(p, lr=0.003, momentum=0.9),
    "rmsprop_centered": lambda o, p: o.RMSprop(p, lr=0.003, centered=True),
    "rmsprop_centered_momentum_maximize": lambda o, p: o.RMSprop(
        p, lr=0.003, momentum=0.5, centered=True, maximize=True
    ),
    "adagrad": lambda o, p: o.Adagrad(p),
    "adagrad_decay_init_wd": lambda o, p: o.Adagrad(
        p, lr=0.05, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.1, eps=1e-8
    ),
    "adagrad_maximize": lambda o, p: o.Adagrad(p, lr=0.05, maximize=True),
    "adadelta": lambda o, p: o.Adadelta(p),
    "adadelta_rho_eps_wd": lambda o, p: o.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1),
    "adadelta_maximize": lambda o, p: o.Adadelta(p, maximize=True),
}


@MODES
@pytest.mark.parametrize("name", list(CONFIGS))
def test_update_rules_match_torch(torch, compiled, name):
    grads = gradient_sequence()
    want, t_opt = run_torch(torch, CONFIGS[name], grads)
    got, g_opt, fn = run_graphc(CONFIGS[name], grads, compiled)
    assert_histories_match(got, want, **tolerance(name, compiled))
    # The optimizer state agrees too, key for key. A momentum buffer sums terms far larger
    # than itself when gradients change sign (RMSprop's grad/avg reach 1/sqrt(1 - alpha)),
    # so a last-bit difference in a term is judged against the tensor's scale, not the
    # element's (measured: PyTorch float32 and graphc both miss the float64 value by 2e-6
    # at an element of 0.197 whose terms are near 10).
    t_state, g_state = t_opt.state_dict()["state"], g_opt.state_dict()["state"]
    assert sorted(g_state) == sorted(t_state)
    for i in t_state:
        assert list(g_state[i]) == list(t_state[i])
        for k, v in t_state[i].items():
            tol = tolerance(name, compiled)
            scale = float(np.abs(v.numpy()).max()) if v.numel() else 0.0
            atol = tol["atol"] + tol["rtol"] * scale
            np.testing.assert_allclose(
                g_state[i][k].numpy(), v.numpy(), rtol=tol["rtol"], atol=atol, err_msg=k
            )
    if compiled:
        assert sum(len(v) for v in fn.cache.values()) == 1


@MODES
@pytest.mark.parametrize(
    "name", [n for n in CONFIGS if n.startswith(("rmsprop", "adagrad", "adadelta"))]
)
def test_rmsprop_adagrad_adadelta_track_torch_over_50_steps(torch, compiled, name):
    """The last-bit differences above compound: over 50 steps RMSprop reaches 1.6e-6 of an
    element (measured), still inside rtol 1e-5, what a user comparing runs would accept."""
    grads = gradient_sequence(steps=50)
    want, _ = run_torch(torch, CONFIGS[name], grads)
    got, _, _ = run_graphc(CONFIGS[name], grads, compiled)
    assert_histories_match(got, want, rtol=1e-5, atol=1e-7)


def two_groups(params):
    return [
        {"params": params[:2]},
        {"params": params[2:], "lr": 0.003, "weight_decay": 0.2},
    ]


@MODES
@pytest.mark.parametrize(
    "name", ["sgd_momentum", "adam", "rmsprop_centered_momentum_maximize", "adagrad", "adadelta"]
)
def test_param_groups_with_their_own_hyperparameters(torch, compiled, name):
    grads = gradient_sequence(2)
    want, _ = run_torch(torch, CONFIGS[name], grads, two_groups)
    got, g_opt, _ = run_graphc(CONFIGS[name], grads, compiled, two_groups)
    assert_histories_match(got, want, **tolerance(name, compiled))
    assert [g["lr"] for g in g_opt.param_groups] == [g_opt.defaults["lr"], 0.003]


def test_param_group_keys_are_torchs(torch):
    """Same keys in the same order: optimizer state_dicts carry across in both directions."""
    names = ["sgd_momentum", "adam", "adamw", "rmsprop", "adagrad", "adadelta"]
    for make in (CONFIGS[n] for n in names):
        t = make(torch.optim, [torch.nn.Parameter(torch.zeros(2))])
        g = make(goptim, [graphc.nn.Parameter(graphc.zeros(2))])
        assert list(g.param_groups[0]) == list(t.param_groups[0])
        t_group = {k: v for k, v in t.param_groups[0].items() if k != "params"}
        g_group = {k: v for k, v in g.param_groups[0].items() if k != "params"}
        assert g_group == t_group


def test_gradient_free_parameters_are_skipped(torch):
    for lib, mk in ((torch, torch.nn.Parameter), (graphc, graphc.nn.Parameter)):
        a, b = mk(lib.ones(3)), mk(lib.ones(3))
        opt = (torch.optim if lib is torch else goptim).Adam([a, b], lr=0.1)
        a.grad = lib.ones(3)
        opt.step()
        assert b not in opt.state or not opt.state[b]
        np.testing.assert_array_equal(b.detach().numpy(), np.ones(3, np.float32))
        np.testing.assert_allclose(a.detach().numpy(), np.full(3, 0.9, np.float32), rtol=1e-6)


def test_closure_is_called_with_grad_enabled_and_its_loss_returned():
    w = graphc.nn.Parameter(graphc.tensor([2.0]))
    opt = goptim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 4.0
    np.testing.assert_allclose(w.detach().numpy(), [1.0])  # 2 - 0.25 * 4


def test_zero_grad_set_to_none_or_zero():
    w = graphc.nn.Parameter(graphc.ones(3))
    opt = goptim.SGD([w], lr=0.1)
    (w * 2).sum().backward()
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(3, np.float32))
    opt.zero_grad()
    assert w.grad is None


def test_invalid_hyperparameters_raise():
    p = [graphc.nn.Parameter(graphc.ones(2))]
    for bad in (
        lambda: goptim.SGD(p, lr=-1.0),
        lambda: goptim.SGD(p, momentum=-0.1),
        lambda: goptim.SGD(p, nesterov=True),
        lambda: goptim.Adam(p, betas=(1.0, 0.9)),
        lambda: goptim.Adam(p, eps=-1.0),
        lambda: goptim.AdamW(p, weight_decay=-1.0),
        lambda: goptim.SGD([], lr=0.1),
        lambda: goptim.SGD([{"params": p}, {"params": p}], lr=0.1),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.warns(UserWarning, match="duplicate parameters"):
        goptim.SGD(p + p, lr=0.1)  # as PyTorch: a warning, not yet an error
    with pytest.raises(TypeError):
        goptim.SGD(p[0], lr=0.1)  # a bare tensor, not an iterable of them


# ---- compiled steps: what re-traces and what does not ---------------------------------------


def test_hyperparameters_baked_into_the_graph_retrace_lr_does_not():
    w = graphc.nn.Parameter(graphc.ones(4))
    opt = goptim.SGD([w], lr=0.1, momentum=0.9)

    @graphc.compile
    def step(g):
        w.grad = g
        opt.step()

    g = graphc.ones(4)
    step(g)
    for lr in (0.05, 0.01, 0.2):
        opt.param_groups[0]["lr"] = lr
        step(g)
    assert sum(len(v) for v in step.cache.values()) == 1
    opt.param_groups[0]["momentum"] = 0.5  # baked in: a guard notices and re-traces
    step(g)
    assert sum(len(v) for v in step.cache.values()) == 2
    # The numbers follow PyTorch's update with the values in force at each call.
    expect, buf = np.ones(4), np.ones(4)
    for i, (lr, m) in enumerate([(0.1, 0.9), (0.05, 0.9), (0.01, 0.9), (0.2, 0.9), (0.2, 0.5)]):
        buf = np.ones(4) if i == 0 else buf * m + 1.0
        expect = expect - lr * buf
    np.testing.assert_allclose(w.detach().numpy(), expect, rtol=1e-6)


# ---- learning-rate schedules ----------------------------------------------------------------

SCHEDULES = {
    "StepLR": lambda s, o: s.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda s, o: s.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "ExponentialLR": lambda s, o: s.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda s, o: s.CosineAnnealingLR(o, T_max=7, eta_min=1e-4),
    "LambdaLR": lambda s, o: s.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "MultiplicativeLR": lambda s, o: s.MultiplicativeLR(o, lambda e: 0.95),
    "ConstantLR": lambda s, o: s.ConstantLR(o, factor=0.25, total_iters=4),
    "LinearLR": lambda s, o: s.LinearLR(o, start_factor=0.1, end_factor=0.8, total_iters=6),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_produce_torchs_learning_rates(torch, name):
    t_opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]}, {"params": [], "lr": 0.3}], lr=0.1
    )
    g_opt = goptim.SGD(
        [{"params": [graphc.nn.Parameter(graphc.zeros(1))]}, {"params": [], "lr": 0.3}], lr=0.1
    )
    t_sched = SCHEDULES[name](torch.optim.lr_scheduler, t_opt)
    g_sched = SCHEDULES[name](goptim.lr_scheduler, g_opt)
    t_lrs, g_lrs = [t_sched.get_last_lr()], [g_sched.get_last_lr()]
    for _ in range(25):
        t_opt.step()
        t_sched.step()
        g_sched.step()
        t_lrs.append(t_sched.get_last_lr())
        g_lrs.append(g_sched.get_last_lr())
    np.testing.assert_allclose(np.array(g_lrs), np.array(t_lrs), rtol=1e-15, atol=0)
    assert g_sched.last_epoch == t_sched.last_epoch


def test_reduce_lr_on_plateau_matches_torch(torch):
    t_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    g_opt = goptim.SGD([graphc.nn.Parameter(graphc.zeros(1))], lr=1.0)
    kw = dict(factor=0.5, patience=2, cooldown=1, min_lr=0.05)
    t_s = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kw)
    g_s = goptim.lr_scheduler.ReduceLROnPlateau(g_opt, **kw)
    metrics = [5, 4, 4, 4, 4, 3.9999, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    for m in metrics:
        t_s.step(m)
        g_s.step(graphc.tensor(float(m)))
        assert g_s.get_last_lr() == t_s.get_last_lr()


def test_scheduler_state_dict_resumes():
    def make():
        opt = goptim.SGD([graphc.nn.Parameter(graphc.zeros(1))], lr=1.0)
        return opt, goptim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)

    opt, sched = make()
    for _ in range(4):
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(3):
        sched.step()
        sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert math.isclose(sched.get_last_lr()[0], (1 + math.cos(math.pi * 7 / 10)) / 2)


@MODES
@pytest.mark.parametrize("name", ["rmsprop_momentum", "adagrad_decay_init_wd", "adadelta"])
def test_schedules_drive_rmsprop_adagrad_adadelta_like_torch(torch, compiled, name):
    """The learning rate is read at every call: a schedule changes it without a re-trace."""

    def schedule(lib, opt):
        return lib.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    grads = gradient_sequence(4)
    t_params = [torch.nn.Parameter(torch.tensor(a)) for a in initial_params()]
    t_opt = CONFIGS[name](torch.optim, t_params)
    t_sched = schedule(torch, t_opt)
    want = []
    for gs in grads:
        for p, g in zip(t_params, gs, strict=True):
            p.grad = torch.tensor(g)
        t_opt.step()
        t_sched.step()
        want.append([p.detach().numpy().copy() for p in t_params])

    g_params = [graphc.nn.Parameter(graphc.tensor(a)) for a in initial_params()]
    g_opt = CONFIGS[name](goptim, g_params)
    g_sched = schedule(graphc, g_opt)

    def step(*gs):
        for p, g in zip(g_params, gs, strict=True):
            p.grad = g
        g_opt.step()

    fn = graphc.compile(step) if compiled else step
    got = []
    for gs in grads:
        fn(*[graphc.tensor(g) for g in gs])
        g_sched.step()
        got.append([p.detach().numpy().copy() for p in g_params])
    assert_histories_match(got, want, **tolerance(name, compiled))
    assert g_opt.param_groups[0]["lr"] == t_opt.param_groups[0]["lr"]
    if compiled:
        assert sum(len(v) for v in fn.cache.values()) == 1


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("RMSprop", dict(lr=-1.0)),
        ("RMSprop", dict(alpha=-0.5)),
        ("RMSprop", dict(momentum=-0.1)),
        ("Adagrad", dict(lr_decay=-1.0)),
        ("Adagrad", dict(initial_accumulator_value=-1.0)),
        ("Adadelta", dict(rho=1.5)),
        ("Adadelta", dict(eps=-1.0)),
    ],
)
def test_invalid_hyperparameters_raise_torchs_errors(torch, name, kwargs):
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], **kwargs)
    with pytest.raises(ValueError) as mine:
        getattr(goptim, name)([graphc.nn.Parameter(graphc.ones(2))], **kwargs)
    assert str(mine.value) == str(theirs.value)
