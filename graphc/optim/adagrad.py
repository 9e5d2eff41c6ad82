"""Adagrad, following torch.optim's single-tensor implementation step by step."""

from __future__ import annotations

import numpy as np

from graphc import functions as G
from graphc.optim.arith import add_scaled, addcdiv, addcmul, hyper
from graphc.optim.optimizer import Optimizer, _no_differentiable, scalar_state
from graphc.tensor import Tensor


def _filled_state(p: Tensor, value: float) -> Tensor:
    return Tensor._wrap(np.full(p.shape, value, p._type().dtype.np))


class Adagrad(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if lr_decay < 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if initial_accumulator_value < 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        _no_differentiable(differentiable)
        super().__init__(
            params,
            dict(
                lr=lr,
                lr_decay=lr_decay,
                eps=eps,
                weight_decay=weight_decay,
                initial_accumulator_value=initial_accumulator_value,
                foreach=foreach,
                maximize=maximize,
                differentiable=differentiable,
                fused=fused,
            ),
        )
        # As PyTorch, every parameter's state exists from the start (in its state_dict too).
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group["initial_accumulator_value"])

    def _init_state(self, p: Tensor, initial: float) -> dict:
        st = self.state[p]
        if "step" not in st:
            st["step"] = scalar_state(0.0)
            st["sum"] = _filled_state(p, initial)
        return st

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        eps = self._const(group, "eps")
        weight_decay = self._const(group, "weight_decay")
        maximize = self._const(group, "maximize")
        # a group added later starts from the constructor's accumulator value, as PyTorch's
        initial = self.defaults["initial_accumulator_value"]
        states = [self._init_state(p, initial) for p, _ in active]

        def host() -> list[float]:
            # clr = lr / (1 + (step - 1) * lr_decay), per parameter, in double as PyTorch
            out = []
            for st in states:
                st["step"]._data += 1
                step = float(st["step"]._data)
                out.append(group["lr"] / (1 + (step - 1) * group["lr_decay"]))
            return out

        clrs = self._runtime(host, [f"clr{i}" for i in range(len(states))], [p for p, _ in active])
        # PyTorch's _single_tensor_adagrad, op for op (see arith.py for the roundings).
        for (p, grad), st, clr in zip(active, states, clrs, strict=True):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                grad = add_scaled(grad, p, weight_decay)
            state_sum = st["sum"]
            state_sum.copy_(addcmul(state_sum, grad, grad, 1))  # addcmul_(grad, grad, value=1)
            std = G.add(G.sqrt(state_sum), hyper(eps, p))  # state_sum.sqrt().add_(eps)
            p.copy_(addcdiv(p, grad, std, -clr))  # param.addcdiv_(grad, std, value=-clr)
