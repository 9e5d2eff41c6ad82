"""graphc.compile: one trace per signature, guards, state written back, PyTorch semantics."""

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.models import ConvNet


def batch(rng, n=8):
    x = graphc.from_numpy(rng.standard_normal((n, 3, 32, 32)).astype(np.float32))
    y = graphc.from_numpy(rng.integers(0, 10, n))
    return x, y


def make_step(net, opt, crit=None):
    crit = crit or nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def test_compiled_step_matches_eager_and_writes_state_back(rng):
    x, y = batch(rng)
    graphc.manual_seed(0)
    eager_net = ConvNet()
    graphc.manual_seed(0)
    net = ConvNet()
    eager = make_step(eager_net, optim.Adam(eager_net.parameters(), lr=1e-3))
    opt = optim.Adam(net.parameters(), lr=1e-3)
    compiled = graphc.compile(make_step(net, opt))
    for _ in range(3):
        np.testing.assert_allclose(compiled(x, y).item(), eager(x, y).item(), rtol=1e-5)
    for (k, a), b in zip(eager_net.state_dict().items(), net.state_dict().values(), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    # .grad and optimizer state are visible after a compiled step, as after an eager one.
    p = net.fc1.weight
    np.testing.assert_allclose(
        p.grad.numpy(), eager_net.fc1.weight.grad.numpy(), rtol=1e-4, atol=1e-7
    )
    assert float(opt.state[p]["step"].item()) == 3.0
    assert len(compiled.cache) == 1


def test_learning_rate_is_a_runtime_input(rng):
    x, y = batch(rng)
    net = ConvNet()
    opt = optim.SGD(net.parameters(), lr=0.1)
    step = graphc.compile(make_step(net, opt))
    step(x, y)
    before = net.fc3.bias.detach().numpy().copy()
    opt.param_groups[0]["lr"] = 0.0
    step(x, y)
    np.testing.assert_array_equal(net.fc3.bias.detach().numpy(), before)
    entries = [e for es in step.cache.values() for e in es]
    assert len(entries) == 1  # changing lr did not re-trace


def test_new_shapes_retrace_and_are_cached(rng):
    net = ConvNet()
    step = graphc.compile(make_step(net, optim.SGD(net.parameters(), lr=0.01)))
    for n in (8, 5, 8, 5):
        step(*batch(rng, n))
    assert len(step.cache) == 2


def test_train_eval_switch_retraces_modules_that_read_training(rng):
    drop = nn.Dropout(0.5)
    f = graphc.compile(lambda x: drop(x))
    x = graphc.ones(1000)
    kept = (f(x).numpy() != 0).mean()
    assert 0.4 < kept < 0.6
    drop.eval()
    np.testing.assert_array_equal(f(x).numpy(), np.ones(1000, np.float32))
    drop.train()
    assert (f(x).numpy() == 0).any()


def test_dropout_draws_fresh_masks_each_call_and_is_seeded():
    drop = nn.Dropout(0.5)
    f = graphc.compile(lambda x: drop(x))
    x = graphc.ones(64)
    graphc.manual_seed(3)
    a, b = f(x).numpy(), f(x).numpy()
    assert not np.array_equal(a, b)
    graphc.manual_seed(3)
    np.testing.assert_array_equal(f(x).numpy(), a)
    graphc.manual_seed(3)
    np.testing.assert_array_equal(drop(x).numpy(), a)  # eager draws the same stream


def test_batchnorm_running_stats_update_in_compiled_step(rng):
    graphc.manual_seed(0)
    bn_eager, bn = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    f = graphc.compile(lambda x: bn(x).sum())
    x = graphc.from_numpy(rng.standard_normal((4, 3, 5, 5)).astype(np.float32))
    for _ in range(2):
        f(x)
        bn_eager(x)
    np.testing.assert_allclose(bn.running_mean.numpy(), bn_eager.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), bn_eager.running_var.numpy(), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 2


def test_gradient_accumulation_across_calls_without_zero_grad():
    w = nn.Parameter(graphc.tensor([1.0, 2.0]))

    @graphc.compile
    def accumulate(x):
        (w * x).sum().backward()

    accumulate(graphc.tensor([1.0, 1.0]))  # grad was None: traced without an input .grad
    accumulate(graphc.tensor([2.0, 3.0]))  # grad is set now: a second trace adds to it
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 4.0])
    accumulate(graphc.tensor([1.0, 1.0]))
    np.testing.assert_allclose(w.grad.numpy(), [4.0, 5.0])


def test_returns_nested_structures_and_accepts_numpy():
    @graphc.compile
    def f(a, pair):
        return {"sum": a + pair[0], "scale": 2, "prod": (a * pair[1],)}

    out = f(np.ones(3, np.float32), (graphc.ones(3), graphc.full((3,), 4.0)))
    assert out["scale"] == 2
    np.testing.assert_array_equal(out["sum"].numpy(), [2, 2, 2])
    np.testing.assert_array_equal(out["prod"][0].numpy(), [4, 4, 4])


def test_compiled_module_runs_inference():
    graphc.manual_seed(0)
    net = ConvNet().eval()
    fast = graphc.compile(net)
    x = graphc.randn(2, 3, 32, 32)
    np.testing.assert_allclose(fast(x).numpy(), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert fast.fc1 is net.fc1


def test_param_update_after_structure_change_retraces():
    lin = nn.Linear(2, 1)
    f = graphc.compile(lambda x: lin(x))
    x = graphc.ones(1, 2)
    f(x)
    lin.weight = nn.Parameter(graphc.zeros(1, 2))
    lin.bias = nn.Parameter(graphc.zeros(1))
    np.testing.assert_array_equal(f(x).numpy(), [[0.0]])


def test_printed_training_graph_is_readable(rng):
    net = ConvNet()
    step = graphc.compile(make_step(net, optim.SGD(net.parameters(), lr=0.01, momentum=0.9)))
    step(*batch(rng))
    text = str(step.last.traced)
    assert "%conv1.weight: f32[6,3,5,5] param" in text
    assert "%fc1.weight.momentum_buffer: f32[120,400] state" in text
    assert "%lr: f32[] scalar" in text
    assert "= conv2d(%x, %conv1.weight)" in text
    assert "models.py:" in text and "in forward" in text  # the user's source lines
    assert "grad(" in text
    final = str(step.last.graph)
    assert "conv2d_weight_grad" in final and "grad(" not in final.replace("_grad(", "")


def test_inplace_on_param_data_inside_compiled_function():
    p = nn.Parameter(graphc.tensor([1.0, 2.0]))

    @graphc.compile
    def bump():
        p.data.add_(1.0)
        with graphc.no_grad():
            p.mul_(2.0)

    bump()
    np.testing.assert_array_equal(p.detach().numpy(), [4.0, 6.0])


def test_higher_order_gradient_in_one_compiled_function():
    x = nn.Parameter(graphc.tensor([3.0]))

    @graphc.compile
    def f():
        y = (x * x * x).sum()  # y = x^3, dy/dx = 3x^2
        y.backward()
        g = x.grad
        return g

    np.testing.assert_allclose(f().numpy(), [27.0])


@pytest.mark.parametrize("batch_size", [3, 8])
def test_functional_losses_under_compile_match_eager(batch_size, rng):
    logits = graphc.from_numpy(rng.standard_normal((batch_size, 5)).astype(np.float32))
    labels = graphc.from_numpy(rng.integers(0, 5, batch_size))
    f = graphc.compile(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1))
    np.testing.assert_allclose(
        f(logits, labels).item(),
        F.cross_entropy(logits, labels, label_smoothing=0.1).item(),
        rtol=1e-6,
    )


def test_unrelated_new_modules_do_not_retrace():
    lin = nn.Linear(2, 1)
    f = graphc.compile(lambda x: lin(x))
    x = graphc.ones(1, 2)
    f(x)
    nn.Linear(3, 2)  # an unrelated model: nothing f captured changed
    graphc.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    f(x)
    assert sum(len(v) for v in f.cache.values()) == 1


def test_threads_calling_one_compiled_function_get_their_own_results():
    import threading

    net = nn.Linear(4, 3)
    f = graphc.compile(net)
    xs = [graphc.randn(2, 4) for _ in range(2)]
    want = [f(x).numpy().copy() for x in xs]
    bad: list[int] = []

    def run(i: int) -> None:
        for _ in range(2000):
            if not np.array_equal(f(xs[i]).numpy(), want[i]):
                bad.append(i)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not bad, f"{len(bad)} calls returned another thread's result"


def test_a_compile_leaves_the_cycle_collector_as_it_found_it():
    """Compiling freezes the heap for the collector (gc.freeze) and must unfreeze it, also
    when tracing fails."""
    import gc

    before = gc.get_freeze_count()

    @graphc.compile
    def ok(x):
        return (x * 2).sum()

    @graphc.compile
    def broken(x):
        return x @ graphc.ones(5, 5)  # (3, 4) @ (5, 5): refused while tracing

    ok(graphc.ones(3, 4))
    assert gc.get_freeze_count() == before and gc.isenabled()
    with pytest.raises(graphc.GraphcError):
        broken(graphc.ones(3, 4))
    assert gc.get_freeze_count() == before and gc.isenabled()
