"""Adadelta (the classic MNIST example's optimizer), following torch.optim's single-tensor
implementation step by step."""

from __future__ import annotations

from graphc import functions as G
from graphc.optim.arith import add_scaled, addcmul, hyper
from graphc.optim.optimizer import Optimizer, _no_differentiable, scalar_state, zeros_state


class Adadelta(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        _no_differentiable(differentiable)
        super().__init__(
            params,
            dict(
                lr=lr,
                rho=rho,
                eps=eps,
                weight_decay=weight_decay,
                maximize=maximize,
                capturable=capturable,
                foreach=foreach,
                differentiable=differentiable,
            ),
        )

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        rho = self._const(group, "rho")
        eps = self._const(group, "eps")
        weight_decay = self._const(group, "weight_decay")
        maximize = self._const(group, "maximize")
        states = []
        for p, _ in active:
            st = self.state[p]
            if "step" not in st:
                st["step"] = scalar_state(0.0)
                st["square_avg"] = zeros_state(p)
                st["acc_delta"] = zeros_state(p)
            states.append(st)

        def host() -> list[float]:
            for st in states:
                st["step"]._data += 1  # counted on the host; the update does not read it
            return [group["lr"]]

        (lr,) = self._runtime(host, ["lr"], [p for p, _ in active])
        # PyTorch's _single_tensor_adadelta, op for op (see arith.py for the roundings).
        for (p, grad), st in zip(active, states, strict=True):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                grad = add_scaled(grad, p, weight_decay)
            square_avg, acc_delta = st["square_avg"], st["acc_delta"]
            # square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
            square_avg.copy_(addcmul(G.mul(square_avg, hyper(rho, p)), grad, grad, 1 - rho))
            std = G.sqrt(G.add(square_avg, hyper(eps, p)))
            # delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad), from the old acc_delta
            delta = G.mul(G.div(G.sqrt(G.add(acc_delta, hyper(eps, p))), std), grad)
            acc_delta.copy_(addcmul(G.mul(acc_delta, hyper(rho, p)), delta, delta, 1 - rho))
            p.copy_(add_scaled(p, delta, -lr))  # param.add_(delta, alpha=-lr)
