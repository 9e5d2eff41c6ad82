"""Recurrent layers: nn.LSTM and nn.GRU (over a whole sequence, as one loop: graphc.scan) and
nn.LSTMCell and nn.GRUCell (one step), with PyTorch's parameter names (weight_ih_l0,
weight_hh_l0_reverse, ...), layouts, gate order (LSTM: i, f, g, o; GRU: r, z, n),
initialisation and arguments.

As in PyTorch's CPU implementation, the input's contribution to every gate of every step,
x @ W_ih^T + b_ih, is one matrix product over the whole sequence before the loop; each step
then computes h @ W_hh^T for all gates at once, and the gate arithmetic after it (sigmoids,
tanh, the cell update) is elementwise, which the compiler fuses into one loop per step.
"""

from __future__ import annotations

import math

from graphc import dispatch
from graphc import functions as G
from graphc.errors import ShapeError
from graphc.loops import scan
from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn.module import Module
from graphc.splitting import chunk
from graphc.tensor import Tensor

GATES = {"LSTM": 4, "GRU": 3}


# ---- one step -------------------------------------------------------------------------------


def lstm_cell(gates_x: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None):
    """One LSTM step from the input's gate contributions: (h', c'). The two contributions
    are added gate by gate (PyTorch adds them whole, then splits: the same sums), so the
    additions join the gate arithmetic's loop instead of a pass of their own."""
    hidden = chunk(F.linear(h, w_hh, b_hh), 4, -1)
    i, f, g, o = (G.add(a, x) for a, x in zip(hidden, chunk(gates_x, 4, -1), strict=True))
    i, f, g, o = G.sigmoid(i), G.sigmoid(f), G.tanh(g), G.sigmoid(o)
    c = G.add(G.mul(f, c), G.mul(i, g))
    return G.mul(o, G.tanh(c)), c


def gru_cell(gates_x: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """One GRU step from the input's gate contributions: h'."""
    x_r, x_z, x_n = chunk(gates_x, 3, -1)
    h_r, h_z, h_n = chunk(F.linear(h, w_hh, b_hh), 3, -1)
    r = G.sigmoid(G.add(h_r, x_r))
    z = G.sigmoid(G.add(h_z, x_z))
    n = G.tanh(G.add(x_n, G.mul(h_n, r)))
    return G.add(G.mul(G.sub(h, n), z), n)  # (h - n) * z + n, PyTorch's order


# ---- the cells ------------------------------------------------------------------------------


class _CellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, dtype) -> None:
        super().__init__()
        from graphc.nn.layers import _empty

        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = GATES[mode] * hidden_size
        self.weight_ih = _empty(g, input_size, dtype=dtype)
        self.weight_hh = _empty(g, hidden_size, dtype=dtype)
        if bias:
            self.bias_ih = _empty(g, dtype=dtype)
            self.bias_hh = _empty(g, dtype=dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def _input(self, input: Tensor, name: str) -> tuple[Tensor, bool]:
        G.tensor_argument(input, name)
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise dispatch.user_error(
                ShapeError,
                f"{name}: expected input of shape [N, {self.input_size}] or "
                f"[{self.input_size}], got {list(input.shape)}",
            )
        return (G.unsqueeze(input, 0), True) if input.ndim == 1 else (input, False)

    def _state(self, hx: Tensor | None, batch: int, unbatched: bool, like: Tensor) -> Tensor:
        if hx is None:
            return G.zeros(batch, self.hidden_size, dtype=like.dtype)
        return G.unsqueeze(hx, 0) if unbatched else hx

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(_CellBase):
    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        x, unbatched = self._input(input, "LSTMCell")
        h = self._state(hx[0] if hx is not None else None, x.shape[0], unbatched, x)
        c = self._state(hx[1] if hx is not None else None, x.shape[0], unbatched, x)
        gx = F.linear(x, self.weight_ih, self.bias_ih)
        h, c = lstm_cell(gx, h, c, self.weight_hh, self.bias_hh)
        return (G.squeeze(h, 0), G.squeeze(c, 0)) if unbatched else (h, c)


class GRUCell(_CellBase):
    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._input(input, "GRUCell")
        h = self._state(hx, x.shape[0], unbatched, x)
        gx = F.linear(x, self.weight_ih, self.bias_ih)
        h = gru_cell(gx, h, self.weight_hh, self.bias_hh)
        return G.squeeze(h, 0) if unbatched else h


# ---- whole sequences --------------------------------------------------------------------------


class _RNNBase(Module):
    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        from graphc.nn.layers import _check_device, _empty

        _check_device(device)
        if not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of "
                "an element being zeroed"
            )
        if hidden_size <= 0 or num_layers <= 0:
            raise ValueError("hidden_size and num_layers must be greater than 0")
        if proj_size:
            raise ValueError(f"{mode}: proj_size is not supported")
        self.mode = mode
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bias = num_layers, bias
        self.batch_first, self.dropout = batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        dirs = 2 if bidirectional else 1
        g = GATES[mode] * hidden_size
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, f"weight_ih{sfx}", _empty(g, size, dtype=dtype))
                setattr(self, f"weight_hh{sfx}", _empty(g, hidden_size, dtype=dtype))
                if bias:
                    setattr(self, f"bias_ih{sfx}", _empty(g, dtype=dtype))
                    setattr(self, f"bias_hh{sfx}", _empty(g, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def _weights(self, layer: int, direction: int):
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        get = lambda n: getattr(self, f"{n}{sfx}") if self.bias or "weight" in n else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _sequence(self, input: Tensor) -> tuple[Tensor, bool]:
        G.tensor_argument(input, self.mode)
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "[N, L, H_in]" if self.batch_first else "[L, N, H_in]"
            raise dispatch.user_error(
                ShapeError,
                f"{self.mode}: expected input of shape {layout} (or [L, H_in] unbatched) with "
                f"H_in = input_size = {self.input_size}, got {list(input.shape)}",
            )
        if input.ndim == 2:
            return G.unsqueeze(input, 1), True
        return (G.transpose(input, 0, 1) if self.batch_first else input), False

    def _initial(self, hx: Tensor | None, batch: int, unbatched: bool, like: Tensor) -> Tensor:
        dirs = 2 if self.bidirectional else 1
        shape = [self.num_layers * dirs, batch, self.hidden_size]
        if hx is None:
            return G.zeros(*shape, dtype=like.dtype)
        if unbatched:
            hx = G.unsqueeze(hx, 1)
        if list(hx.shape) != shape:
            raise dispatch.user_error(
                ShapeError, f"{self.mode}: expected hidden size {shape}, got {list(hx.shape)}"
            )
        return hx

    def _run(self, x: Tensor, states: list[Tensor]):
        """All layers over x [L, N, H_in]; states[k] is [layers*dirs, N, H] per state kind.
        Returns the last layer's output and each state kind's final values."""
        dirs = 2 if self.bidirectional else 1
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                gx = F.linear(x, w_ih, b_ih)  # every step's input gates: one product
                init_state = tuple(s[layer * dirs + d] for s in states)
                last, ys = self._direction(gx, init_state, w_hh, b_hh, reverse=bool(d))
                for k, v in enumerate(last):
                    finals[k].append(v)
                outs.append(ys)
            x = outs[0] if dirs == 1 else G.cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, [G.stack(f) for f in finals]

    def _direction(self, gx, state, w_hh, b_hh, reverse: bool):
        if self.mode == "LSTM":

            def step(carry, g):
                h, c = lstm_cell(g, carry[0], carry[1], w_hh, b_hh)
                return (h, c), h

        else:

            def step(carry, g):
                h = gru_cell(g, carry[0], w_hh, b_hh)
                return (h,), h

        return scan(step, state, gx, reverse=reverse)

    def _output(self, out: Tensor, unbatched: bool) -> Tensor:
        """The last layer's outputs [L, N, D*H] in the caller's layout."""
        if unbatched:
            return G.squeeze(out, 1)
        return G.transpose(out, 0, 1) if self.batch_first else out

    @staticmethod
    def _state(state: Tensor, unbatched: bool) -> Tensor:
        return G.squeeze(state, 1) if unbatched else state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s + (", bidirectional=True" if self.bidirectional else "")


class LSTM(_RNNBase):
    """`LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False)`; forward(input, (h_0, c_0)) -> (output, (h_n, c_n))."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        x, unbatched = self._sequence(input)
        batch = x.shape[1]
        h0 = self._initial(hx[0] if hx is not None else None, batch, unbatched, x)
        c0 = self._initial(hx[1] if hx is not None else None, batch, unbatched, x)
        out, (h, c) = self._run(x, [h0, c0])
        return self._output(out, unbatched), (self._state(h, unbatched), self._state(c, unbatched))


class GRU(_RNNBase):
    """`GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)`; forward(input, h_0) -> (output, h_n)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Tensor, hx: Tensor | None = None):
        x, unbatched = self._sequence(input)
        h0 = self._initial(hx, x.shape[1], unbatched, x)
        out, (h,) = self._run(x, [h0])
        return self._output(out, unbatched), self._state(h, unbatched)
