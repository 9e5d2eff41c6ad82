"""nn.MultiheadAttention with PyTorch's parameters (packed in_proj_weight [3E, E],
in_proj_bias, out_proj), initialisation and forward arguments."""

from __future__ import annotations

from graphc import dispatch
from graphc import functions as G
from graphc.errors import ShapeError
from graphc.nn import init
from graphc.nn.functional_sequence import multi_head_attention_forward
from graphc.nn.layers import Linear, _check_device, _empty
from graphc.nn.module import Module
from graphc.tensor import Tensor


class NonDynamicallyQuantizableLinear(Linear):
    """PyTorch's name for MultiheadAttention's output projection (a plain Linear)."""


class MultiheadAttention(Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_device(device)
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                f"and num_heads={num_heads} instead"
            )
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if add_bias_kv or add_zero_attn or (kdim or embed_dim) != embed_dim:
            raise ValueError(
                "MultiheadAttention: add_bias_kv, add_zero_attn and kdim/vdim other than "
                "embed_dim are not supported"
            )
        if (vdim or embed_dim) != embed_dim:
            raise ValueError("MultiheadAttention: vdim other than embed_dim is not supported")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = self.vdim = embed_dim
        self._qkv_same_embed_dim = True
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = _empty(3 * embed_dim, embed_dim, dtype=dtype)
        self.register_parameter("q_proj_weight", None)
        self.register_parameter("k_proj_weight", None)
        self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = _empty(3 * embed_dim, dtype=dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        for name, t in (("query", query), ("key", key), ("value", value)):
            G.tensor_argument(t, "MultiheadAttention", name)
            if t.ndim != 3 or t.shape[-1] != self.embed_dim:
                layout = "[N, L, E]" if self.batch_first else "[L, N, E]"
                raise dispatch.user_error(
                    ShapeError,
                    f"MultiheadAttention: {name} must be a batched 3-D tensor {layout} with "
                    f"E = embed_dim = {self.embed_dim}, got shape {list(t.shape)}",
                )
        if self.batch_first:  # the computation is sequence-first, as PyTorch's
            same_kv = key is value
            same_qk = query is key
            query = G.transpose(query, 0, 1)
            key = query if same_qk else G.transpose(key, 0, 1)
            value = key if same_kv else G.transpose(value, 0, 1)
        out, weights = multi_head_attention_forward(
            query,
            key,
            value,
            self.num_heads,
            self.in_proj_weight,
            self.in_proj_bias,
            self.out_proj.weight,
            self.out_proj.bias,
            self.dropout,
            self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        if self.batch_first:
            out = G.transpose(out, 0, 1)
        return out, weights
