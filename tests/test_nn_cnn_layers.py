"""The CNN layers (ConvTranspose2d, Upsample, padding, AdaptiveMaxPool2d, GroupNorm,
InstanceNorm2d, Dropout2d) as modules: parameters, buffers, defaults, reprs and the
initialisation are PyTorch's, and a layer loaded with torch's state_dict computes torch's
output and gradients, eagerly and compiled (the functions themselves: test_ops_cnn.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_nn_layers import check_parity

import graphc
import graphc.nn as nn
import graphc.nn.functional as F

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


CONV_T = [
    (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 5, 6)),
    (dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1, groups=2),
     (2, 4, 4, 5)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, output_padding=1,
          dilation=2, bias=False), (1, 2, 4, 3)),
    (dict(in_channels=3, out_channels=2, kernel_size=3, padding=1), (3, 5, 5)),  # unbatched
]  # fmt: skip


@MODES
@pytest.mark.parametrize("kwargs, x_shape", CONV_T, ids=[str(k) for k, _ in CONV_T])
def test_conv_transpose2d(torch, compiled, kwargs, x_shape):
    g, t = nn.ConvTranspose2d(**kwargs), torch.nn.ConvTranspose2d(**kwargs)
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == {
        k: tuple(v.shape) for k, v in t.state_dict().items()
    }
    assert repr(g) == repr(t)
    check_parity(torch, g, t, x_shape, compiled, rtol=1e-5, atol=2e-6)


def test_conv_transpose2d_output_size(torch, rng):
    """forward(x, output_size) picks the output_padding, within PyTorch's range."""
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=3, stride=3, padding=1)
    g, t = nn.ConvTranspose2d(**kwargs), torch.nn.ConvTranspose2d(**kwargs)
    g.load_state_dict(t.state_dict())
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    for size in ((10, 13), (12, 15), [1, 3, 11, 14]):
        want = t(torch.tensor(x), output_size=size).detach().numpy()
        got = g(graphc.tensor(x), output_size=size).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(graphc.GraphcError, match="valid sizes range from 10 to 12"):
        g(graphc.tensor(x), output_size=(13, 13))


def test_conv_transpose2d_initialisation():
    """kaiming_uniform(a=sqrt(5)) over the fan-in of PyTorch's transposed layout, which is
    out_channels / groups * kH * kW; the bias within 1 / sqrt(fan_in)."""
    graphc.manual_seed(0)
    m = nn.ConvTranspose2d(16, 32, 3, groups=2)
    bound = 1 / math.sqrt(16 * 9)
    w, b = np.abs(m.weight.detach().numpy()), np.abs(m.bias.detach().numpy())
    assert w.max() <= bound and w.max() > 0.95 * bound
    assert b.max() <= bound and b.max() > 0.8 * bound


UPSAMPLE = [
    (nn.Upsample, dict(scale_factor=2)),
    (nn.Upsample, dict(size=(7, 5), mode="bilinear")),
    (nn.Upsample, dict(scale_factor=1.5, mode="bilinear", align_corners=True)),
    (nn.UpsamplingNearest2d, dict(scale_factor=2)),
    (nn.UpsamplingBilinear2d, dict(size=(6, 9))),
]


@MODES
@pytest.mark.parametrize("cls, kwargs", UPSAMPLE, ids=[f"{c.__name__}{k}" for c, k in UPSAMPLE])
def test_upsample(torch, compiled, cls, kwargs):
    g, t = cls(**kwargs), getattr(torch.nn, cls.__name__)(**kwargs)
    assert repr(g) == repr(t)
    check_parity(torch, g, t, (2, 3, 4, 5), compiled)


PADS = [
    ("ZeroPad2d", (2,)),
    ("ZeroPad2d", ((1, 0, 2, 3),)),
    ("ConstantPad2d", ((1, 2, 0, 1), 0.5)),
    ("ReflectionPad2d", ((2, 1, 1, 3),)),
    ("ReplicationPad2d", (2,)),
    ("CircularPad2d", ((1, 2, 2, 1),)),
]


@pytest.mark.parametrize("name, args", PADS, ids=[f"{n}{a}" for n, a in PADS])
def test_padding_layers(torch, name, args):
    g, t = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(g) == repr(t)
    check_parity(torch, g, t, (2, 3, 4, 5), compiled=False)


@MODES
def test_padding_layers_compiled(torch, compiled):
    layers = [getattr(nn, n)(*a) for n, a in PADS]
    twins = [getattr(torch.nn, n)(*a) for n, a in PADS]
    check_parity(torch, nn.Sequential(*layers), torch.nn.Sequential(*twins), (1, 2, 4, 5), compiled)


@MODES
@pytest.mark.parametrize("size", [(2, 2), (3, 4), 1, (None, 2)], ids=str)
def test_adaptive_max_pool2d(torch, compiled, size):
    g, t = nn.AdaptiveMaxPool2d(size), torch.nn.AdaptiveMaxPool2d(size)
    assert repr(g) == repr(t)
    check_parity(torch, g, t, (2, 3, 6, 7), compiled)


NORMS = [
    ("GroupNorm", (2, 6), (2, 6, 5, 4)),
    ("GroupNorm", (3, 6, 1e-3, False), (2, 6, 5, 4)),
    ("GroupNorm", (6, 6), (3, 6, 4)),
    ("InstanceNorm2d", (4,), (2, 4, 5, 6)),
    ("InstanceNorm2d", (4, 1e-5, 0.1, True), (2, 4, 5, 6)),
    ("InstanceNorm2d", (4, 1e-5, 0.1, True), (4, 5, 6)),  # unbatched
]


@MODES
@pytest.mark.parametrize("name, args, x_shape", NORMS, ids=[f"{n}{a}" for n, a, _ in NORMS])
def test_normalization(torch, compiled, name, args, x_shape):
    g, t = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(g) == repr(t)
    assert list(g.state_dict()) == list(t.state_dict())
    torch.nn.init.normal_(t.weight) if t.weight is not None else None
    check_parity(torch, g, t, x_shape, compiled, rtol=1e-4, atol=1e-5)


@MODES
def test_instance_norm_running_stats(torch, compiled, rng):
    """With track_running_stats, training updates the running mean and variance as
    PyTorch does (each sample's statistics, averaged), and eval mode normalises with them."""
    g = nn.InstanceNorm2d(3, momentum=0.3, affine=True, track_running_stats=True)
    t = torch.nn.InstanceNorm2d(3, momentum=0.3, affine=True, track_running_stats=True)
    g.load_state_dict(t.state_dict())
    step = graphc.compile(lambda x: g(x)) if compiled else g
    for _ in range(3):
        x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
        step(graphc.tensor(x))
        t(torch.tensor(x))
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(
            g.state_dict()[k].numpy(), t.state_dict()[k].numpy(), rtol=1e-5, err_msg=k
        )
    g.eval()
    t.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = t(torch.tensor(x)).numpy()
    np.testing.assert_allclose(g(graphc.tensor(x)).detach().numpy(), want, rtol=1e-5, atol=1e-6)


@MODES
def test_dropout2d_zeroes_whole_channels(compiled):
    """Each (sample, channel) is kept, scaled by 1 / (1 - p), or zeroed as a whole; about a
    fraction p of them is zeroed; eval mode and p = 0 pass the input through."""
    m = nn.Dropout2d(0.25)
    assert repr(m) == "Dropout2d(p=0.25, inplace=False)"
    x = graphc.tensor(np.random.default_rng(0).uniform(1, 2, (64, 32, 3, 4)).astype(np.float32))
    out = (graphc.compile(lambda v: m(v)) if compiled else m)(x).numpy()
    kept = (out != 0).reshape(64, 32, -1)
    assert np.all(kept.all(axis=2) | ~kept.any(axis=2))  # one draw per (sample, channel)
    scale = np.float32(1) / np.float32(0.75)
    np.testing.assert_array_equal(out, np.where(out != 0, x.numpy() * scale, 0))
    dropped = 1 - float(kept[:, :, 0].mean())
    assert 0.18 < dropped < 0.32
    m.eval()
    assert m(x) is x
    assert F.dropout2d(x, 0.0) is x
    with pytest.raises(graphc.GraphcError, match="between 0 and 1"):
        F.dropout2d(x, 1.5)
