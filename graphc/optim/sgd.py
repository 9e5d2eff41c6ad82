"""SGD with momentum, dampening, weight decay and Nesterov, as torch.optim.SGD."""

from __future__ import annotations

from graphc import dispatch
from graphc import functions as G
from graphc.optim.optimizer import Optimizer, required, zeros_state


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
    ) -> None:
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
            ),
        )

    @dispatch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with dispatch.enable_grad():
                loss = closure()
        self._begin_step()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        active = self._active(group)
        if not active:
            return
        momentum = self._const(group, "momentum")
        dampening = self._const(group, "dampening")
        weight_decay = self._const(group, "weight_decay")
        nesterov = self._const(group, "nesterov")
        maximize = self._const(group, "maximize")
        bufs, new = [], []
        if momentum != 0:
            for p, _ in active:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = zeros_state(p)
                    st["_fresh"] = True
                    new.append(st)
                bufs.append((st["momentum_buffer"], "_fresh" in st))

        def host() -> list[float]:
            # PyTorch's first step sets buf = grad; here it is buf*0 + grad*1 on the zero
            # buffer made above, so one graph serves the first call and every later one.
            first = [st.pop("_fresh", False) for st in new]
            if any(first):
                return [group["lr"], 0.0, 1.0]
            return [group["lr"], group["momentum"], 1.0 - group["dampening"]]

        lr, keep_new, mix_new = self._runtime(host, ["lr", "momentum", "1-dampening"])
        for i, (p, grad) in enumerate(active):
            if maximize:
                grad = G.neg(grad)
            if weight_decay != 0:
                grad = G.add(grad, p, alpha=weight_decay)
            if momentum != 0:
                buf, is_new = bufs[i]
                keep, mix = (keep_new, mix_new) if is_new else (momentum, 1.0 - dampening)
                buf.copy_(G.add(G.mul(buf, keep), G.mul(grad, mix)))
                grad = G.add(grad, buf, alpha=momentum) if nesterov else buf
            p.add_(G.mul(grad, -lr))
