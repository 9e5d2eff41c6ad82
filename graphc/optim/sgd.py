"""SGD with momentum, dampening, weight decay and Nesterov, as torch.optim.SGD."""

from __future__ import annotations

from graphc import functions as G
from graphc.host_scalars import SGDScalars
from graphc.optim.arith import add_scaled, hyper
from graphc.optim.optimizer import (
    Optimizer,
    _no_differentiable,
    check_range,
    required,
    zeros_state,
)


class SGD(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if lr is not required:
            check_range("learning rate", lr)
        check_range("momentum value", momentum)
        check_range("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _no_differentiable(differentiable)
        # The group keys and their order are PyTorch's, so state_dicts carry across.
        # foreach/fused are accepted and recorded: a compiled step fuses all updates anyway.
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
                foreach=foreach,
                differentiable=differentiable,
                fused=fused,
            ),
        )

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        momentum = self._const(group, "momentum")
        weight_decay = self._const(group, "weight_decay")
        nesterov = self._const(group, "nesterov")
        maximize = self._const(group, "maximize")
        states = []
        if momentum != 0:
            for p, _ in active:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = zeros_state(p)
                    st["_fresh"] = True
                states.append(st)

        def host() -> list[float]:
            # Per buffer: PyTorch's first step sets buf = grad; here it is buf*0 + grad*1 on
            # the zero buffer made above. Fresh or not is decided at each call, not baked in,
            # so the graph is the same whether the buffers are new or were loaded from a
            # checkpoint (a resumed run repeats the uninterrupted one bit for bit).
            out = [group["lr"]]
            for st in states:
                fresh = st.pop("_fresh", False)
                out += [0.0, 1.0] if fresh else [group["momentum"], 1.0 - group["dampening"]]
            return out

        names = ["lr"] + [n for i in range(len(states)) for n in (f"keep{i}", f"mix{i}")]
        recipe = SGDScalars(self, group, states)
        lr, *mixing = self._runtime(host, names, [p for p, _ in active], recipe)
        # PyTorch's _single_tensor_sgd, op for op (see arith.py for the roundings):
        #   grad = grad.add(p, alpha=wd); buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        #   grad = grad.add(buf, alpha=momentum) if nesterov else buf; p.add_(grad, alpha=-lr)
        for i, (p, grad) in enumerate(active):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                grad = add_scaled(grad, p, weight_decay)
            if momentum != 0:
                buf = states[i]["momentum_buffer"]
                keep, mix = mixing[2 * i], mixing[2 * i + 1]
                buf.copy_(add_scaled(G.mul(buf, hyper(keep, buf)), grad, mix))
                grad = add_scaled(grad, buf, momentum) if nesterov else buf
            p.copy_(add_scaled(p, grad, -lr))
