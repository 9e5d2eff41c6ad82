"""nn.functional for sequence models: embedding, layer_norm, scaled_dot_product_attention and
multi_head_attention_forward, with PyTorch's arguments and arithmetic.

None of these is an op of its own. An embedding is an index_select of the weight's rows (its
gradient an index_add: no one-hot matrix, no dense product). layer_norm normalises with the
`batch_norm` op over the last dimensions, whose VJP is the whole derivative through the
statistics in two reductions, then applies the weight and bias as elementwise ops (they vary
along the normalised dimensions, which batch_norm's weight may not). Attention is matmuls,
a softmax over the last axis and masks as `where` and additions.
"""

from __future__ import annotations

import math

from graphc import dispatch, dtypes
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.indexing import masked_fill, tril
from graphc.splitting import chunk
from graphc.tensor import Tensor

apply = dispatch.apply


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    G.tensor_argument(input, "embedding")
    if input.dtype not in (dtypes.int64, dtypes.int32):
        raise dispatch.user_error(
            ShapeError,
            f"embedding: expected the indices to be an integer tensor (Long or Int), got "
            f"{input.dtype.name}; convert them with .long()",
        )
    if weight.ndim != 2:
        raise dispatch.user_error(
            ShapeError, f"embedding: the weight must be 2-D, got shape {list(weight.shape)}"
        )
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise dispatch.user_error(
            GraphcError,
            "embedding: max_norm, scale_grad_by_freq and sparse are not supported; leave "
            "them at their defaults",
        )
    if padding_idx is not None:
        n = weight.shape[0]
        if not -n <= padding_idx < n:
            raise dispatch.user_error(
                GraphcError, f"embedding: padding_idx {padding_idx} must be within num_embeddings"
            )
        padding_idx = padding_idx % n
    return apply("index_select", (weight, input), axis=0, padding_idx=padding_idx)


def _normalized_axes(input: Tensor, normalized_shape, fn: str) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > input.ndim or tuple(input.shape[input.ndim - k :]) != shape:
        raise dispatch.user_error(
            ShapeError,
            f"{fn}: given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size {list(input.shape)}",
        )
    return tuple(range(input.ndim - k, input.ndim))


def layer_norm(
    input: Tensor,
    normalized_shape,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    G.tensor_argument(input, "layer_norm")
    axes = _normalized_axes(input, normalized_shape, "layer_norm")
    full = tuple(input.shape)
    n = 1
    for a in axes:
        n *= input.shape[a]
    # PyTorch's CPU kernel: the mean, then the mean squared deviation, in the input's type;
    # rstd = 1 / sqrt(var + eps)
    mean = G.mean(input, axes, keepdim=True)
    centered = G.sub(input, mean)
    var = G.div(G.sum(G.mul(centered, centered), axes, keepdim=True), float(n))
    invstd = G.rsqrt(G.add(var, eps))
    ones = G.full(full, 1.0, dtype=input.dtype)
    zeros = G.full(full, 0.0, dtype=input.dtype)
    operands = (input, G.broadcast_to(mean, full), G.broadcast_to(invstd, full), ones, zeros)
    out = apply("batch_norm", operands, axes=axes)
    if weight is not None:
        out = G.mul(out, weight)
    if bias is not None:
        out = G.add(out, bias)
    return out


# ---- attention -----------------------------------------------------------------------------


def _causal(rows: int, cols: int) -> Tensor:
    """True where query i may attend to key j (j <= i): PyTorch's is_causal mask."""
    return tril(G.full((rows, cols), True, dtype=dtypes.bool_))


def _additive(mask: Tensor | None, dtype, what: str, masked=False) -> Tensor | None:
    """A float mask as is; a bool mask as -inf where it equals `masked` and 0 elsewhere
    (scaled_dot_product_attention's True means "attend", nn.MultiheadAttention's "masked")."""
    if mask is None:
        return None
    if mask.dtype == dtypes.bool_:
        zeros = G.full(mask.shape, 0.0, dtype=dtype)
        return masked_fill(zeros, mask if masked else G.logical_not(mask), float("-inf"))
    if not mask.dtype.is_floating_point:
        raise dispatch.user_error(
            ShapeError, f"{what} must be a bool or float tensor, got {mask.dtype.name}"
        )
    return G.cast(mask, dtype)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(q k^T * scale + mask) v over the last two dimensions; a bool attn_mask says
    which positions take part (True), a float one is added to the scores."""
    from graphc.nn.functional import dropout, softmax

    for name, t in (("query", query), ("key", key), ("value", value)):
        G.tensor_argument(t, "scaled_dot_product_attention", name)
        if t.ndim < 2:
            raise dispatch.user_error(
                ShapeError,
                f"scaled_dot_product_attention: {name} needs at least 2 dimensions "
                f"(..., L, E), got {list(t.shape)}",
            )
    if is_causal and attn_mask is not None:
        raise dispatch.user_error(
            GraphcError,
            "scaled_dot_product_attention: explicit attn_mask should not be set when "
            "is_causal=True",
        )
    rows, cols = query.shape[-2], key.shape[-2]
    factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = G.mul(G.matmul(query, G.transpose(key, -2, -1)), factor)
    if is_causal:
        scores = masked_fill(scores, G.logical_not(_causal(rows, cols)), float("-inf"))
    bias = _additive(attn_mask, scores.dtype, "attn_mask")
    if bias is not None:
        scores = G.add(scores, bias)
    weights = softmax(scores, -1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return G.matmul(weights, value)


def _merge_masks(attn_mask, key_padding_mask, batch, heads, rows, cols, dtype):
    """attn_mask [L, S] or [N*H, L, S] plus key_padding_mask [N, S], as one additive mask
    [N*H, L or 1, S] (None if there is neither), as PyTorch merges them."""
    mask = _additive(attn_mask, dtype, "attn_mask", masked=True)
    if mask is not None:
        if mask.ndim == 2:
            if tuple(mask.shape) != (rows, cols):
                raise dispatch.user_error(
                    ShapeError,
                    f"The shape of the 2D attn_mask is {list(mask.shape)}, but should be "
                    f"{[rows, cols]}.",
                )
            mask = G.unsqueeze(mask, 0)
        elif tuple(mask.shape) != (batch * heads, rows, cols):
            raise dispatch.user_error(
                ShapeError,
                f"The shape of the 3D attn_mask is {list(mask.shape)}, but should be "
                f"{[batch * heads, rows, cols]}.",
            )
    pad = _additive(key_padding_mask, dtype, "key_padding_mask", masked=True)
    if pad is not None:
        if tuple(pad.shape) != (batch, cols):
            raise dispatch.user_error(
                ShapeError,
                f"expecting key_padding_mask shape of {[batch, cols]}, but got {list(pad.shape)}",
            )
        pad = G.reshape(
            G.broadcast_to(G.reshape(pad, batch, 1, 1, cols), (batch, heads, 1, cols)),
            batch * heads,
            1,
            cols,
        )
        mask = pad if mask is None else G.add(mask, pad)
    return mask


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    num_heads: int,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    dropout_p: float = 0.0,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Sequence-first ([L, N, E]) multi-head attention with packed input projections, as
    torch.nn.functional.multi_head_attention_forward computes it."""
    from graphc.nn.functional import dropout, linear, softmax

    rows, batch, embed = query.shape
    cols = key.shape[0]
    head = embed // num_heads
    if head * num_heads != embed:
        raise dispatch.user_error(
            ShapeError, f"embed_dim {embed} not divisible by num_heads {num_heads}"
        )
    if is_causal and attn_mask is None:
        raise dispatch.user_error(
            GraphcError,
            "Need attn_mask if specifying the is_causal hint (pass the causal mask, e.g. "
            "nn.Transformer.generate_square_subsequent_mask(L), or leave is_causal False)",
        )
    if query is key and key is value:  # self-attention: one projection for q, k and v
        q, k, v = chunk(linear(query, in_proj_weight, in_proj_bias), 3, -1)
    else:
        w = chunk(in_proj_weight, 3, 0)
        b = chunk(in_proj_bias, 3, 0) if in_proj_bias is not None else (None,) * 3
        q, k, v = (linear(x, w[i], b[i]) for i, x in enumerate((query, key, value)))
    mask = _merge_masks(attn_mask, key_padding_mask, batch, num_heads, rows, cols, q.dtype)

    def heads(x: Tensor, length: int) -> Tensor:  # [L, N, E] -> [N*H, L, head]
        return G.transpose(G.reshape(x, length, batch * num_heads, head), 0, 1)

    q, k, v = heads(q, rows), heads(k, cols), heads(v, cols)
    p = dropout_p if training else 0.0
    if need_weights:
        scores = G.matmul(G.mul(q, math.sqrt(1.0 / head)), G.transpose(k, 1, 2))
        if mask is not None:
            scores = G.add(mask, scores)
        weights = softmax(scores, -1)
        if p > 0.0:
            weights = dropout(weights, p)
        out = G.matmul(weights, v)
    else:
        if mask is not None:
            mask = G.reshape(mask, batch, num_heads, -1, cols)
        out4 = scaled_dot_product_attention(
            G.reshape(q, batch, num_heads, rows, head),
            G.reshape(k, batch, num_heads, cols, head),
            G.reshape(v, batch, num_heads, cols, head),
            mask,
            p,
        )
        out = G.reshape(out4, batch * num_heads, rows, head)
        weights = None
    out = G.reshape(G.transpose(out, 0, 1), rows * batch, embed)
    out = G.reshape(linear(out, out_proj_weight, out_proj_bias), rows, batch, embed)
    if weights is None:
        return out, None
    weights = G.reshape(weights, batch, num_heads, rows, cols)
    if average_attn_weights:
        weights = G.mean(weights, 1)
    return out, weights
