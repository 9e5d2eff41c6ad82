"""Adam and AdamW, following torch.optim's single-tensor implementation step by step."""

from __future__ import annotations

import math

from graphc import functions as G
from graphc.host_scalars import AdamScalars
from graphc.optim.arith import add_scaled, addcdiv, addcmul, hyper, lerp
from graphc.optim.optimizer import (
    Optimizer,
    _no_differentiable,
    check_range,
    scalar_state,
    zeros_state,
)


class Adam(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_range("learning rate", lr)
        check_range("epsilon value", eps)
        check_range("beta parameter at index 0", betas[0], high=1.0)
        check_range("beta parameter at index 1", betas[1], high=1.0)
        check_range("weight_decay value", weight_decay)
        _no_differentiable(differentiable)
        # PyTorch's group keys, in its order (state_dicts carry across in both directions).
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=tuple(betas),
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
                foreach=foreach,
                capturable=capturable,
                differentiable=differentiable,
                fused=fused,
                decoupled_weight_decay=decoupled_weight_decay,
            ),
        )

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        beta1, beta2 = self._const(group, "betas")
        eps = self._const(group, "eps")
        weight_decay = self._const(group, "weight_decay")
        amsgrad = self._const(group, "amsgrad")
        maximize = self._const(group, "maximize")
        decoupled = self._const(group, "decoupled_weight_decay")
        states = []
        for p, _ in active:
            st = self.state[p]
            if "step" not in st:
                st["step"] = scalar_state(0.0)
                st["exp_avg"] = zeros_state(p)
                st["exp_avg_sq"] = zeros_state(p)
                if amsgrad:
                    st["max_exp_avg_sq"] = zeros_state(p)
            states.append(st)

        def host() -> list[float]:
            lr = group["lr"]
            b1, b2 = group["betas"]
            out = [lr, 1.0 - lr * group["weight_decay"]]
            for st in states:
                st["step"]._data += 1  # the step count lives on the host
                step = float(st["step"]._data)
                out += [lr / (1 - b1**step), math.sqrt(1 - b2**step)]
            return out

        names = ["lr", "decay"] + [
            n for i in range(len(states)) for n in (f"step_size{i}", f"bias_correction2_sqrt{i}")
        ]
        recipe = AdamScalars(self, group, states)
        scalars = self._runtime(host, names, [p for p, _ in active], recipe)
        # PyTorch's _single_tensor_adam, op for op (see arith.py for the roundings).
        for i, ((p, grad), st) in enumerate(zip(active, states, strict=True)):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                if decoupled:
                    p.mul_(hyper(scalars[1], p))  # p.mul_(1 - lr * weight_decay)
                else:
                    grad = add_scaled(grad, p, weight_decay)  # grad.add(p, alpha=wd)
            exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
            exp_avg.copy_(lerp(exp_avg, grad, 1 - beta1))
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            exp_avg_sq.copy_(addcmul(G.mul(exp_avg_sq, hyper(beta2, p)), grad, grad, 1 - beta2))
            step_size, bc2_sqrt = scalars[2 + 2 * i], scalars[3 + 2 * i]
            if amsgrad:
                st["max_exp_avg_sq"].copy_(G.maximum(st["max_exp_avg_sq"], exp_avg_sq))
                second = st["max_exp_avg_sq"]
            else:
                second = exp_avg_sq
            # denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
            denom = G.add(G.div(G.sqrt(second), hyper(bc2_sqrt, p)), hyper(eps, p))
            p.copy_(addcdiv(p, exp_avg, denom, -step_size))


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's default weight_decay=0.01)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
