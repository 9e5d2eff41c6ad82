"""Rewrites of 1x1 convolutions (stride 1, no padding), the pointwise layers of MobileNet-style
networks, into the forms the kernels run fastest. Part of canonicalize's rules.

A 1x1 convolution has no spatial structure: out[n, o, p] = sum over c of w[o, c] x[n, c, p]
over the P = H * W positions. The direct convolution kernels put vectors along an output
row, so a small plane wastes most lanes (a 4x4 plane: rows of 4 in 16-lane vectors) and
their weight gradient loads a row of g per multiply-add. Measured on the project's machine
(1 thread, batch 64; GFLOP/s of conv2d / conv2d_input_grad / conv2d_weight_grad):

    plane, channels      as 4-D convolution    on a [N, C, 1, P] view     as matmuls
    4x4,   512 -> 512     29 / 28 / 53          113 / 113 / 38            ~95 each, + copies
    8x8,   256 -> 256     56 / 56 / 35          115 / 114 / 45            88 / 97 / 93
    2x2,  1024 -> 1024    14 / 13 / 29          (rows of 4 lanes)         95 / 64 / 107
    32x32,  32 -> 64      86 / 73 / 55          (as is)                   61 / 52 / 63

So (lanes L of the target's vectors):
- pointwise_as_matmul: P < L: all three ops as matmuls over [C, N*P] copies of x and g
  (transposed once each, shared through CSE); the product's result is read back as a
  transposed view, which loop kernels (BatchNorm, ReLU) read in place;
- pointwise_flat_rows: otherwise, the same op on [N, C, 1, P] views (reshapes of stored
  values cost nothing), so vectors run along the whole plane; the weight gradient, whose
  kernel gains least from that, is a matmul while the copies of x and g cost less than
  what it saves (P <= 256 at these channel counts).
"""

from __future__ import annotations

from graphc.ir import GraphBuilder, Node

MATMUL_WEIGHT_GRAD_MAX_PLANE = 256
DEFAULT_LANES = 16


def _pointwise(node: Node) -> bool:
    """A conv2d (or gradient op) with a 1x1 kernel, stride 1 and no padding."""
    if node.op not in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
        return False
    a = node.attrs
    w_shape = node.inputs[1].shape if node.op != "conv2d_weight_grad" else a["weight_shape"]
    return (
        tuple(w_shape[2:]) == (1, 1)
        and tuple(a["stride"]) == (1, 1)
        and tuple(a["padding"]) == (0, 0)
        and node.dtype.is_floating_point
    )


def _geometry(node: Node) -> tuple[int, int, int, int, int]:
    """(N, C, O, H, W) of the forward convolution."""
    a = node.attrs
    if node.op == "conv2d":
        n, c, h, w = node.inputs[0].shape
        return n, c, node.inputs[1].shape[0], h, w
    if node.op == "conv2d_input_grad":
        n, c, h, w = a["input_shape"]
        return n, c, node.inputs[1].shape[0], h, w
    n, c, h, w = node.inputs[0].shape
    return n, c, a["weight_shape"][0], h, w


def _columns(b: GraphBuilder, t: Node) -> Node:
    """[N, K, H, W] -> [K, N*H*W]: the channels as rows (a transposed copy)."""
    n, k, h, w = t.shape
    return b.reshape(b.transpose(t, perm=(1, 0, 2, 3)), shape=(k, n * h * w))


def _back(b: GraphBuilder, rows: Node, shape) -> Node:
    """[K, N*H*W] -> [N, K, H, W], read in place by loop kernels."""
    n, k, h, w = shape
    return b.transpose(b.reshape(rows, shape=(k, n, h, w)), perm=(1, 0, 2, 3))


def pointwise_as_matmul(
    b: GraphBuilder, node: Node, ins: tuple[Node, ...], lanes: int = DEFAULT_LANES
) -> Node | None:
    # conv2d(x, w) -> (w[O, C] @ x[C, N*P]) back to NCHW            (1x1, stride 1, P < lanes)
    # conv2d_input_grad(g, w) -> (w^T @ g[O, N*P]) back to NCHW
    # conv2d_weight_grad(x, g) -> g[O, N*P] @ x[C, N*P]^T
    if not _pointwise(node) or node.attrs["groups"] != 1:
        return None
    n, c, o, h, w = _geometry(node)
    if h * w >= lanes:
        return None
    if node.op == "conv2d":
        x, wt = ins
        prod = b.matmul(b.reshape(wt, shape=(o, c)), _columns(b, x))
        return _back(b, prod, node.shape)
    if node.op == "conv2d_input_grad":
        g, wt = ins
        prod = b.matmul(b.reshape(wt, shape=(o, c)), _columns(b, g), trans_a=True)
        return _back(b, prod, node.shape)
    x, g = ins
    prod = b.matmul(_columns(b, g), _columns(b, x), trans_b=True)
    return b.reshape(prod, shape=node.shape)


def pointwise_flat_rows(
    b: GraphBuilder, node: Node, ins: tuple[Node, ...], lanes: int = DEFAULT_LANES
) -> Node | None:
    # conv2d(x, w) -> conv2d(x viewed as [N, C, 1, H*W], w) viewed as [N, O, H, W]   (1x1)
    # conv2d_input_grad and conv2d_weight_grad likewise; the weight gradient as
    # g[O, N*P] @ x[C, N*P]^T while P <= MATMUL_WEIGHT_GRAD_MAX_PLANE
    if not _pointwise(node):
        return None
    n, c, o, h, w = _geometry(node)
    if h == 1:
        return None  # already one row
    a = dict(node.attrs)
    p = h * w
    if node.op == "conv2d":
        x, wt = ins
        flat = b.conv2d(b.reshape(x, shape=(n, c, 1, p)), wt, **a)
        return b.reshape(flat, shape=node.shape)
    if node.op == "conv2d_input_grad":
        g, wt = ins
        a["input_shape"] = (n, c, 1, p)
        flat = b.conv2d_input_grad(b.reshape(g, shape=(n, o, 1, p)), wt, **a)
        return b.reshape(flat, shape=node.shape)
    x, g = ins
    if p <= MATMUL_WEIGHT_GRAD_MAX_PLANE and a["groups"] == 1:
        prod = b.matmul(_columns(b, g), _columns(b, x), trans_b=True)
        return b.reshape(prod, shape=node.shape)
    return b.conv2d_weight_grad(
        b.reshape(x, shape=(n, c, 1, p)), b.reshape(g, shape=(n, o, 1, p)), **a
    )


RULES = (pointwise_as_matmul, pointwise_flat_rows)  # lanes: canonicalize passes the target's
