"""RMSprop, following torch.optim's single-tensor implementation step by step."""

from __future__ import annotations

from graphc import functions as G
from graphc.optim.arith import add_scaled, addcdiv, addcmul, hyper, lerp
from graphc.optim.optimizer import Optimizer, _no_differentiable, scalar_state, zeros_state


class RMSprop(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if alpha < 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        _no_differentiable(differentiable)
        # PyTorch's group keys, in its order (state_dicts carry across in both directions).
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                alpha=alpha,
                eps=eps,
                centered=centered,
                weight_decay=weight_decay,
                capturable=capturable,
                foreach=foreach,
                maximize=maximize,
                differentiable=differentiable,
            ),
        )

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        alpha = self._const(group, "alpha")
        eps = self._const(group, "eps")
        weight_decay = self._const(group, "weight_decay")
        momentum = self._const(group, "momentum")
        centered = self._const(group, "centered")
        maximize = self._const(group, "maximize")
        states = []
        for p, _ in active:
            st = self.state[p]
            if "step" not in st:  # PyTorch's state, in its order
                st["step"] = scalar_state(0.0)
                st["square_avg"] = zeros_state(p)
            if momentum > 0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = zeros_state(p)
            if centered and "grad_avg" not in st:
                st["grad_avg"] = zeros_state(p)
            states.append(st)

        def host() -> list[float]:
            for st in states:
                st["step"]._data += 1  # counted on the host; the update does not read it
            return [group["lr"]]

        (lr,) = self._runtime(host, ["lr"], [p for p, _ in active])
        # PyTorch's _single_tensor_rmsprop, op for op (see arith.py for the roundings).
        for (p, grad), st in zip(active, states, strict=True):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                grad = add_scaled(grad, p, weight_decay)  # grad.add(p, alpha=wd)
            square_avg = st["square_avg"]
            # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            square_avg.copy_(addcmul(G.mul(square_avg, hyper(alpha, p)), grad, grad, 1 - alpha))
            if centered:
                grad_avg = st["grad_avg"]
                grad_avg.copy_(lerp(grad_avg, grad, 1 - alpha))
                # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
                avg = G.sqrt(addcmul(square_avg, grad_avg, grad_avg, -1))
            else:
                avg = G.sqrt(square_avg)
            avg = G.add(avg, hyper(eps, p))
            if momentum > 0:
                buf = st["momentum_buffer"]
                # buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                buf.copy_(addcdiv(G.mul(buf, hyper(momentum, p)), grad, avg, 1))
                p.copy_(add_scaled(p, buf, -lr))
            else:
                p.copy_(addcdiv(p, grad, avg, -lr))  # param.addcdiv_(grad, avg, value=-lr)
