"""Differential fuzzing: random valid graphs compiled to native code vs the reference interpreter.

Graphs come from tests/graph_gen.py; the reference values and how far native code may differ
from them (rounding only) from tests/error_bounds.py. Each case runs the whole pipeline
(run_pipeline, then native_executable) and calls the executable twice, on fresh copies of two
sets of input values (the second call finds the arena dirty, and gets inputs that are not
updated in place in Fortran order), and after each call checks
- every output against the interpreter (exact for data movement, integers and booleans;
  within the propagated rounding bound for float arithmetic; NaN/inf classes equal);
- every input the memory plan updates "inplace" now holds that output's value, and every
  other input array is untouched.
Public-API cases train random MLP/conv stacks for a few steps, compiled natively vs eager.
The regression tests at the end are the minimal graphs of the bugs this file found.

Runs are derandomized (the same examples every time) and bounded: about half a minute for the
whole file, the slow-marked test included. GRAPHC_FUZZ_EXAMPLES=N explores N fresh random
graphs per test instead, e.g. GRAPHC_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_native.py -k
interpreter; a failure prints the graph, the input values, the schedule and the memory plan.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from error_bounds import mismatches, reference
from graph_gen import KINDS, Case, GraphGen
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from graphc import dtypes
from graphc.codegen.backend import native_executable
from graphc.ir import Graph, GraphBuilder, TensorType
from graphc.ops import OPS
from graphc.passes import run_pipeline

EXPLORE = int(os.environ.get("GRAPHC_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int):
    return settings(
        max_examples=EXPLORE or examples,
        derandomize=not EXPLORE,
        deadline=None,
        database=settings.default.database if EXPLORE else None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class Unsupported(Exception):
    pass


def compile_native(graph: Graph):
    planned = run_pipeline(graph, keep_snapshots=False).graph
    try:
        return planned, native_executable(planned)
    except NotImplementedError as e:
        raise Unsupported(str(e)) from e


def check(case: Case, seed: int) -> None:
    """Native vs reference for one generated graph, called twice on different input values
    (the second call finds the arena holding the first call's values, not zeros)."""
    fills = ", ".join(
        f"{n.name}: {f.kind}" for n, f in zip(case.graph.inputs, case.fills, strict=True)
    )
    calls = [case.arrays(seed), case.arrays(seed + 1)]
    check_graph(case.graph, calls, f"seeds {seed}, {seed + 1}; {fills}")


def check_graph(graph: Graph, calls: list[list[np.ndarray]], values: str = "as given") -> None:
    """Native vs reference for one graph, one executable called on each list of input arrays
    in turn: its outputs, and what happened to the caller's input arrays. From the second
    call on, inputs that are not updated in place are passed in Fortran order (the runtime
    makes its own contiguous copy)."""
    planned, exe = compile_native(graph)
    shared = check_sharing(planned)
    if shared and currently_in_test_context():
        event("kernels sharing code")
    plan = planned.meta["memory"]
    updated = {b.base for b in plan.buffers.values() if b.kind == "inplace"}
    for call, arrays in enumerate(calls):
        want, errs = reference(graph, arrays)
        fresh = [
            np.array(a, order="F") if call and a.ndim > 1 and n not in updated else a.copy()
            for n, a in zip(planned.inputs, arrays, strict=True)
        ]
        got = exe(fresh)
        problems = []
        for name, node, g in zip(graph.output_names, graph.outputs, got, strict=True):
            if g.shape != node.shape or g.dtype != np.dtype(node.dtype.np):
                problems.append(f"{name}: got {g.dtype}{list(g.shape)}, want {node.type}")
                continue
            bad = mismatches(g, want[node], errs[node])
            if bad.any():
                problems.append(_describe(name, g, want[node], errs[node], bad))
        problems += _check_inputs(planned, arrays, fresh, got)
        if problems:
            where = f"call {call + 1} of {len(calls)}: " if len(calls) > 1 else ""
            problems[0] = where + problems[0]
            raise AssertionError(_report(graph, planned, values, problems))


def check_sharing(planned: Graph) -> int:
    """Kernels that share code (passes/share.py) emit exactly that code on their own, and
    call it with buffers in the same roles: their signature leaves out nothing an emitter
    reads. Returns how many kernels run another kernel's code."""
    from llvmlite import ir

    from graphc.codegen.lower import emit_kernel, kernel_plans
    from graphc.codegen.target import host_target
    from graphc.passes.schedule import stored_values

    target = host_target()
    tiles, shared = kernel_plans(planned, target)
    plan = planned.meta["memory"]
    stored = set(stored_values(planned, planned.meta["schedule"]))
    seen: dict[str, tuple[str, list, str]] = {}
    for k in planned.meta["schedule"].kernels:
        code = shared.codes[k.name]
        module = ir.Module("probe")
        spec = emit_kernel(
            module,
            k,
            stored,
            lambda n: plan.storage(n).value,
            target,
            tiles.kernels.get(k.name),
            name="probe",
        )
        roles = [code.role(a) for a in spec.args]
        assert None not in roles, f"{k.name}: an argument outside its storage classes"
        first = seen.setdefault(code.digest, (str(module), roles, k.name))
        assert first[:2] == (str(module), roles), (
            f"{k.name} and {first[2]} share a signature but not their code:\n{planned}"
        )
    return len(shared.codes) - len(seen)


def _check_inputs(planned, before, after, got) -> list[str]:
    """In-place updates land in the caller's arrays; nothing else is written there."""
    plan = planned.meta["memory"]
    inplace = {b.base: o for o, b in plan.buffers.items() if b.kind == "inplace"}
    out = []
    for node, old, new in zip(planned.inputs, before, after, strict=True):
        if node in inplace:
            if currently_in_test_context():
                event("an input updated in place")
            k = next(i for i, o in enumerate(planned.outputs) if o is inplace[node])
            if new.tobytes() != np.ascontiguousarray(got[k]).tobytes():
                out.append(
                    f"input {node.name} is planned to hold {planned.output_names[k]} in place, "
                    "but the caller's array does not hold the returned value"
                )
        elif old.tobytes() != new.tobytes():
            changed = np.flatnonzero(
                old.reshape(-1).view(np.uint8) != new.reshape(-1).view(np.uint8)
            )
            out.append(
                f"input {node.name} was written although no plan entry updates it in place "
                f"(bytes {changed[:8].tolist()} changed)"
            )
    return out


def _describe(name, got, want, err, bad) -> str:
    idx = np.argwhere(bad)[:5]
    lines = [f"{name}: {int(bad.sum())} of {bad.size} elements differ"]
    for i in idx:
        i = tuple(int(v) for v in i)
        lines.append(
            f"  at {list(i)}: native {got[i]!r}, reference {want[i]!r} (bound {err[i]:.3g})"
        )
    return "\n".join(lines)


def _report(graph: Graph, planned: Graph, values: str, problems: list[str]) -> str:
    schedule = planned.meta["schedule"].summary(planned)
    memory = planned.meta["memory"].summary(planned)
    return "\n".join(
        ["native code differs from the interpreter:", *problems, "", str(graph)]
        + [f"input values: {values}", "", schedule, memory]
    )


def run_case(data, focus: str | None = None, max_steps: int = 10, repeats: int = 0) -> None:
    case = GraphGen(data.draw, focus=focus, max_steps=max_steps, repeats=repeats).build()
    seed = data.draw(st.integers(0, 2**16), label="values seed")
    try:
        check(case, seed)
    except Unsupported as e:
        if focus is not None:
            pytest.skip(f"native lowering of {focus} graphs is missing: {e}")
        event(f"unsupported: {e}")
        reject()


@fuzz_settings(examples=100)
@given(st.data())
def test_random_graphs_match_the_interpreter(data):
    run_case(data)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_random_graphs_built_around_each_op_kind(kind):
    @fuzz_settings(examples=8)
    @given(st.data())
    def run(data):
        run_case(data, focus=kind, max_steps=5)

    run()


@fuzz_settings(examples=60)
@given(st.data())
def test_random_graphs_with_repeated_blocks_match_the_interpreter(data):
    """Blocks built again over other operands of the same types: kernels that share code
    (compiled once, called with each block's buffers) compute what the interpreter does."""
    run_case(data, max_steps=6, repeats=3)


@pytest.mark.slow
@fuzz_settings(examples=400)
@given(st.data())
def test_random_graphs_match_the_interpreter_at_length(data):
    run_case(data, max_steps=16)


# ---- the public API: random small training steps, compiled to native code vs eager ----------


@st.composite
def architectures(draw):
    """(input shape, layer specs, loss, optimizer): a random MLP or conv stack that trains."""
    ints = lambda lo, hi: draw(st.integers(lo, hi))  # noqa: E731
    layers: list[tuple[str, dict]] = []
    if draw(st.booleans()):
        c, h, w = ints(1, 3), ints(4, 9), ints(4, 9)
        shape = (c, h, w)
        for _ in range(ints(1, 3)):
            kind = draw(st.sampled_from(["conv", "conv", "act", "maxpool", "avgpool", "bn"]))
            if kind == "conv":
                k, s, p = ints(1, 3), ints(1, 2), ints(0, 1)
                if min(h, w) + 2 * p < k:
                    k = 1
                out = ints(1, 4)
                layers.append(
                    ("conv", dict(in_channels=c, out_channels=out, kernel_size=k, stride=s,
                                  padding=p, bias=draw(st.booleans())))
                )  # fmt: skip
                c, h, w = out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            elif kind in ("maxpool", "avgpool") and min(h, w) >= 2:
                k, s = ints(1, 2), ints(1, 2)
                layers.append((kind, dict(kernel_size=k, stride=s)))
                h, w = (h - k) // s + 1, (w - k) // s + 1
            elif kind == "bn":
                layers.append(("bn", dict(num_features=c)))
            else:
                layers.append(("act", dict(fn=draw(st.sampled_from(["relu", "tanh", "sigmoid"])))))
        layers.append(("flatten", {}))
        features = c * h * w
    else:
        features = ints(1, 17)
        shape = (features,)
    for _ in range(ints(0, 2)):
        out = ints(1, 17)
        layers.append(("linear", dict(in_features=features, out_features=out)))
        layers.append(("act", dict(fn=draw(st.sampled_from(["relu", "tanh", "sigmoid"])))))
        features = out
    classes = ints(1, 6)
    layers.append(("linear", dict(in_features=features, out_features=classes)))
    loss = draw(st.sampled_from(["cross_entropy", "nll", "mse"]))
    optimizers = [
        ("SGD", dict(lr=0.1)),
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
        ("Adam", dict(lr=0.01)),
        ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ]
    if any(name == "bn" for name, _ in layers):
        # Batch norm makes the gradient of the bias before it zero up to rounding noise, and
        # Adam turns noise into steps of size lr with a random sign: compare SGD only.
        optimizers = optimizers[:3]
    opt = draw(st.sampled_from(optimizers))
    return shape, classes, layers, loss, opt


def _model(layers):
    import graphc.nn as nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    make = {
        "conv": nn.Conv2d,
        "maxpool": nn.MaxPool2d,
        "avgpool": nn.AvgPool2d,
        "bn": nn.BatchNorm2d,
        "flatten": nn.Flatten,
        "linear": nn.Linear,
        "act": lambda fn: acts[fn](),
    }
    return nn.Sequential(*[make[name](**kw) for name, kw in layers])


def _training_step(net, optimizer, loss):
    import graphc.nn.functional as F

    def step(x, y):
        optimizer.zero_grad()
        out = net(x)
        if loss == "cross_entropy":
            value = F.cross_entropy(out, y)
        elif loss == "nll":
            value = F.nll_loss(F.log_softmax(out, 1), y)
        else:
            value = F.mse_loss(out, F.one_hot(y, out.shape[1]).float())
        value.backward()
        optimizer.step()
        return value

    return step


@fuzz_settings(examples=16)
@given(architectures(), st.integers(0, 2**16))
def test_random_training_steps_compiled_natively_match_eager(arch, seed):
    import graphc
    import graphc.optim as optim
    from graphc.frontend.compile import CompiledFunction

    shape, classes, layers, loss, (opt_name, opt_kw) = arch
    nets = []
    for _ in range(2):
        graphc.manual_seed(seed)
        nets.append(_model(layers))
    eager_net, native_net = nets
    eager = _training_step(
        eager_net, getattr(optim, opt_name)(eager_net.parameters(), **opt_kw), loss
    )
    native = CompiledFunction(
        _training_step(
            native_net, getattr(optim, opt_name)(native_net.parameters(), **opt_kw), loss
        ),
        backend=native_executable,
    )
    rng = np.random.default_rng(seed)
    for i in range(3):
        x = graphc.from_numpy(rng.standard_normal((3, *shape)).astype(np.float32))
        y = graphc.from_numpy(rng.integers(0, classes, 3))
        want, got = eager(x, y).item(), native(x, y).item()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=f"loss of step {i}")
    expect = eager_net.state_dict()
    for name, value in native_net.state_dict().items():
        np.testing.assert_allclose(
            value.numpy(), expect[name].numpy(), rtol=2e-4, atol=2e-5, err_msg=name
        )


# ---- regressions: minimal graphs of the bugs the fuzzer found ---------------------------------


def _graph(build, updates=None) -> Graph:
    """A small graph: build(b) adds inputs and nodes and returns its outputs."""
    b = GraphBuilder("regression")
    outputs = build(b)
    names = [f"out{i}" for i in range(len(outputs))]
    return b.build(outputs, names, meta={"updates": updates} if updates else None)


def _inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n.shape).astype(n.dtype.np) for n in graph.inputs]


def f32(*shape: int) -> TensorType:
    return TensorType(shape, dtypes.float32)


def test_output_that_reshapes_an_input_has_its_own_shape():
    # The output lives in the input's memory (an alias); it was returned with the input's shape.
    g = _graph(lambda b: [b.reshape(b.add_input("x", f32(2, 3)), shape=(6,))])
    check_graph(g, [_inputs(g)])


def test_fill_returned_as_an_output_keeps_its_buffer():
    # A `full` output is materialised by a copy loop; its arena block was treated as dead at
    # once and reused by the next kernel.
    def build(b):
        x = b.add_input("x", f32(16))
        return [b.full(1, (), dtypes.int32), b.exp(x)]

    g = _graph(build)
    check_graph(g, [_inputs(g)])


def test_relu_mask_that_is_also_an_output_is_not_fused_into_the_pool_gradient():
    def build(b):
        x, g = b.add_input("x", f32(1, 2, 4, 4)), b.add_input("g", f32(1, 2, 2, 2))
        r = b.relu(x)
        dx = b.max_pool2d_grad(g, r, kernel_size=(2, 2), stride=(2, 2))
        zero = b.full(0.0, r.shape, dtypes.float32)
        mask = b.gt(r, zero)
        return [b.where(mask, dx, zero), mask]

    g = _graph(build)
    check_graph(g, [_inputs(g)])


def test_argmax_of_booleans():
    g = _graph(lambda b: [b.argmax(b.add_input("m", TensorType((2, 5), dtypes.bool_)), axis=1)])
    check_graph(g, [[np.array([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], bool)]])


@pytest.mark.parametrize("view", ["transpose", "broadcast_to"])
def test_reshape_of_a_non_contiguous_view_read_by_a_loop(view):
    def build(b):
        x = b.add_input("x", f32(3, 4))
        if view == "transpose":
            v = b.transpose(x, perm=(1, 0))
        else:
            v = b.broadcast_to(b.reshape(x, shape=(3, 1, 4)), shape=(3, 2, 4))
        flat = b.reshape(v, shape=(v.type.numel,))
        return [b.add(flat, b.full(1.0, flat.shape, dtypes.float32))]

    g = _graph(build)
    check_graph(g, [_inputs(g)])


def test_views_of_a_large_fill_read_by_a_loop_and_returned():
    # Folding turns small views of a fill into fills; larger ones reach the loops as views.
    def build(b):
        x = b.add_input("x", f32(9, 10))
        half = b.slice(b.full(0.5, (10, 12), dtypes.float32), axis=1, start=0, stop=9, step=1)
        return [b.add(b.transpose(half, perm=(1, 0)), x), half]

    g = _graph(build)
    check_graph(g, [_inputs(g)])


def test_view_materialised_for_a_matmul_stays_alive_for_a_later_loop():
    # transpose(x) is copied once for the matmul; the later loop reads that copy, whose arena
    # block was released after the matmul and overwritten.
    def build(b):
        x, w = b.add_input("x", f32(4, 6)), b.add_input("w", f32(4, 5))
        t = b.transpose(x, perm=(1, 0))
        m = b.matmul(t, w)
        total = b.reduce_sum(m, axes=(0, 1))
        twice = b.mul(t, b.full(2.0, t.shape, dtypes.float32))
        return [b.exp(m), b.reduce_sum(twice, axes=(1,)), total]

    g = _graph(build)
    check_graph(g, [_inputs(g)])


def test_update_in_place_then_read_old_value_in_the_same_loop():
    # p.new is written over p; the same loop then read p (meaning the old value) again.
    def build(b):
        p, g = b.add_input("p", f32(4), "param"), b.add_input("g", f32(4))
        new = b.sub(p, b.mul(g, b.full(0.1, (4,), dtypes.float32)))
        return [new, b.sub(new, p)]

    g = _graph(build, updates={"out0": "p"})
    planned, _ = compile_native(g)
    assert planned.meta["memory"].buffers[planned.outputs[0]].kind == "inplace"
    check_graph(g, [_inputs(g)])


def test_elementwise_expressions_are_not_reassociated_across_nan_and_inf():
    # Reassociation (a fast-math flag loop kernels used to carry) rewrote x - 0.1*x into
    # 0.9*x (inf, not NaN, at x = inf), (p - q) + q into p and exp(log(x)) into x.
    def build(b):
        p, q = b.add_input("p", f32(3)), b.add_input("q", f32(3))
        tenth = b.mul(p, b.full(0.1, (3,), dtypes.float32))
        return [b.sub(p, tenth), b.add(b.sub(p, q), q), b.exp(b.log(p))]

    g = _graph(build)
    p = np.array([np.inf, -1.0, 2.0], np.float32)
    q = np.array([np.nan, np.inf, 1.0], np.float32)
    check_graph(g, [[p, q]])
    out = compile_native(g)[1]([p.copy(), q.copy()])
    np.testing.assert_array_equal(np.isnan(out[0]), [True, False, False])
    np.testing.assert_array_equal(np.isnan(out[1]), [True, True, False])
    np.testing.assert_array_equal(np.isnan(out[2]), [False, True, False])


# ---- conv kernels with inf or NaN next to the padding ------------------------------------------
# The spec (and PyTorch) pads with zeros and multiplies them: 0 * inf there is NaN. The conv
# kernels skip the padding on their fast paths, and take exact loops when an operand that
# meets it is not finite.


NONFINITE_PADDING = {
    # op: (inputs, attrs, an element the spec and PyTorch make NaN or finite)
    "conv2d": (
        [np.ones((1, 1, 2, 2)), np.full((1, 1, 1, 1), np.inf)],
        dict(padding=(1, 1)),
        ((0, 0, 0, 1), "nan"),  # the padded top row times an inf weight
    ),
    "conv2d_weight_grad": (
        [np.ones((1, 1, 2, 2)), np.where(np.arange(16).reshape(1, 1, 4, 4) == 1, np.inf, 0.0)],
        dict(weight_shape=(1, 1, 1, 1), padding=(1, 1)),
        ((0, 0, 0, 0), "nan"),  # a padded row of x times an inf cotangent
    ),
    "conv2d_input_grad": (
        [np.ones((1, 1, 1, 3)), np.array([[[[np.inf, 1.0, 1.0]]]])],
        dict(input_shape=(1, 1, 1, 3), padding=(0, 1)),
        ((0, 0, 0, 2), "finite"),  # no cotangent meets the inf weight here: 1 + 1
    ),
}


@pytest.mark.parametrize("op", sorted(NONFINITE_PADDING))
def test_conv_kernels_multiply_padding_like_the_spec(op):
    arrays, attrs, (where, expect) = NONFINITE_PADDING[op]
    arrays = [a.astype(np.float32) for a in arrays]

    def build(b):
        x, y = (b.add_input(f"in{i}", f32(*a.shape)) for i, a in enumerate(arrays))
        return [b.emit(op, [x, y], attrs)]

    g = _graph(build)
    value = compile_native(g)[1]([a.copy() for a in arrays])[0][where]
    assert np.isnan(value) if expect == "nan" else np.isfinite(value)


# (x shape, w shape, attrs): padded geometries that take each kernel's vector schedules
NONFINITE_GEOMETRIES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), dict(padding=(1, 1))),
    ((2, 4, 9, 9), (6, 2, 3, 3), dict(stride=(2, 2), padding=(1, 1), groups=2)),
    ((1, 3, 10, 11), (5, 3, 3, 2), dict(padding=(2, 1), dilation=(2, 1))),
    ((1, 2, 5, 5), (33, 2, 3, 3), dict(padding=(1, 1))),  # conv2d's channel schedule
    ((2, 2, 4, 5), (3, 2, 1, 1), dict(padding=(1, 2))),  # outputs that read only padding
]
# (which operand, value): the first or second input of the op (x or g, then w or g)
POISONS = [(0, np.inf), (0, np.nan), (1, np.inf), (1, -np.inf), (1, np.nan)]


def _conv_op_inputs(op, x_shape, w_shape, attrs, rng):
    """The op's two inputs (standard normal) and its attrs, for conv2d(x[x_shape], w)."""
    full = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1, **attrs}
    y = OPS["conv2d"].ref(np.zeros(x_shape), np.zeros(w_shape), **full)
    shapes = {
        "conv2d": (x_shape, w_shape, {}),
        "conv2d_input_grad": (y.shape, w_shape, {"input_shape": x_shape}),
        "conv2d_weight_grad": (x_shape, y.shape, {"weight_shape": w_shape}),
    }[op]
    first, second, extra = shapes
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (first, second)]
    return arrays, {**full, **extra}


def _poison(a: np.ndarray, value: float, rng) -> np.ndarray:
    """a with `value` at one element on the spatial border and one anywhere."""
    a = a.copy()
    n, c, h, w = a.shape
    edge = (rng.integers(n), rng.integers(c), rng.choice([0, h - 1]), rng.integers(w))
    a[edge] = value
    a[tuple(rng.integers(d) for d in a.shape)] = value
    return a


@pytest.mark.parametrize("op", ["conv2d", "conv2d_input_grad", "conv2d_weight_grad"])
@pytest.mark.parametrize("geometry", range(len(NONFINITE_GEOMETRIES)))
def test_conv_nonfinite_values_give_the_specs_nan_and_inf(op, geometry):
    x_shape, w_shape, attrs = NONFINITE_GEOMETRIES[geometry]
    rng = np.random.default_rng(geometry)
    arrays, full = _conv_op_inputs(op, x_shape, w_shape, attrs, rng)

    def build(b):
        x, y = (b.add_input(f"in{i}", f32(*a.shape)) for i, a in enumerate(arrays))
        return [b.emit(op, [x, y], full)]

    exe = compile_native(_graph(build))[1]
    poisoned = 0
    for which, value in POISONS:
        ins = list(arrays)
        ins[which] = _poison(ins[which], value, rng)
        with np.errstate(invalid="ignore"):
            want = OPS[op].ref(*ins, **full)
        got = exe([a.copy() for a in ins])[0]
        case = f"{op} {x_shape} {w_shape} {attrs}, input {which} holds {value}"
        for name, cls in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
            np.testing.assert_array_equal(cls(got), cls(want), err_msg=f"{name}: {case}")
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4, err_msg=case)
        poisoned += not finite.all()
    assert poisoned >= 3  # most cases reach the output (not all: g is dropped in the padding)
