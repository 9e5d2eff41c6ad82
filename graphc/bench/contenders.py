"""The contenders: one class per way of running the workload, all with the same interface.

    c = make_contender(name, workload, data)
    c.run()          one training step (zero_grad, forward, loss, backward, step, loss.item())
                     -> the loss; or, for inference workloads, one forward pass -> the logits
    c.parameters()   the model's current state_dict as numpy arrays (for the correctness check)

Every contender builds its own model from the workload's initial state and owns its optimizer,
so contenders never share a tensor. Imports of torch happen only in the torch contenders.
"""

from __future__ import annotations

import numpy as np

from graphc.bench.config import (
    GRAPHC,
    GRAPHC_EAGER,
    TORCH_COMPILE,
    TORCH_EAGER,
    BenchError,
    Workload,
)
from graphc.bench.workload import WorkloadData, model_class
from graphc.training.objective import RECONSTRUCTION, criterion, objective_of


class Contender:
    name: str

    def run(self):  # pragma: no cover - interface
        raise NotImplementedError

    def parameters(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def compile_details(self) -> dict:
        """Compiler timings of the last compilation, for the startup report (if any)."""
        return {}


def _backend(name: str):
    if name == "native":
        from graphc.codegen.backend import native_executable

        return native_executable
    from graphc.frontend.compile import interpreter_executable

    return interpreter_executable


class GraphcContender(Contender):
    """graphc: the whole step under graphc.compile with the chosen backend; or, with
    compiled=False, graphc's eager mode (the correctness reference when PyTorch is absent)."""

    def __init__(
        self, w: Workload, data: WorkloadData, compiled: bool = True, float64: bool = False
    ) -> None:
        """`float64` (eager only): the same model and batch in double precision, the exact
        answer float32 results are measured against when PyTorch is absent."""
        import graphc
        import graphc.nn as nn

        self.name = GRAPHC if compiled else GRAPHC_EAGER
        if float64:
            self.name += " (float64)"
        graphc.manual_seed(w.seed)
        net = model_class(w.model)()
        net.load_state_dict(data.state)
        if float64:
            net = net.double()
        self.net = net
        self.x, self.y = graphc.from_numpy(data.x), graphc.from_numpy(data.y)
        if float64 and data.x.dtype.kind == "f":  # (token ids stay integers)
            self.x = graphc.from_numpy(data.x.astype(np.float64))
        if objective_of(net) == RECONSTRUCTION:
            self.y = self.x  # the target of an autoencoder is its input
        if w.kind == "train":
            net.train()
            loss_fn = criterion(nn, objective_of(net))
            optimizer = _optimizer(graphc.optim, net.parameters(), w)

            def train_step(inputs, labels):
                optimizer.zero_grad()
                loss = loss_fn(net(inputs), labels)
                loss.backward()
                optimizer.step()
                return loss

            fn = train_step
        else:
            net.eval()

            def fn(inputs):
                return net(inputs)

        self.kind = w.kind
        if compiled:
            self.compiled = graphc.compile(fn, backend=_backend(w.backend))
            self.fn = self.compiled
        else:
            self.compiled = None
            self.fn = fn if w.kind == "train" else _no_grad(graphc, fn)

    def run(self):
        out = self.fn(self.x, self.y) if self.kind == "train" else self.fn(self.x)
        return out.item() if self.kind == "train" else out.numpy()

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.numpy().copy() for k, v in self.net.state_dict().items()}

    def compile_details(self) -> dict:
        entry = self.compiled.last if self.compiled is not None else None
        if entry is None:
            return {}
        details = {"graphc_seconds": dict(entry.timings)}
        backend = getattr(entry.executable, "timings", None)
        if backend:
            details["backend"] = dict(backend)
        return details

    def graph(self):
        """The optimised graph of the last call (None in eager mode or before the first call)."""
        entry = self.compiled.last if self.compiled is not None else None
        return entry.graph if entry is not None else None


def _no_grad(graphc, fn):
    def wrapped(*args):
        with graphc.no_grad():
            return fn(*args)

    return wrapped


class TorchContender(Contender):
    """PyTorch eager, or torch.compile (inductor, default mode) of the model with the loss,
    backward (AOTAutograd compiles it too) and the optimizer step around it, as users write it."""

    def __init__(
        self, w: Workload, data: WorkloadData, compiled: bool = False, float64: bool = False
    ) -> None:
        """`float64`: the same model and batch in double precision, as the exact answer
        float32 results are measured against (the correctness check)."""
        import torch

        from graphc.bench.twin import torch_twin

        self.name = TORCH_COMPILE if compiled else TORCH_EAGER
        if float64:
            self.name += " (float64)"
        torch.manual_seed(w.seed)
        net = torch_twin(model_class(w.model))()
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in data.state.items()})
        if float64:
            net = net.double()
        self.net = net
        self.torch = torch
        self.x, self.y = torch.from_numpy(data.x.copy()), torch.from_numpy(data.y.copy())
        if float64 and self.x.is_floating_point():  # (token ids stay integers)
            self.x = self.x.double()
        if objective_of(net) == RECONSTRUCTION:
            self.y = self.x
        self.model = torch.compile(net) if compiled else net
        self.kind = w.kind
        if w.kind == "train":
            net.train()
            self.criterion = criterion(torch.nn, objective_of(net))
            self.optimizer = _optimizer(torch.optim, net.parameters(), w)
        else:
            net.eval()

    def run(self):
        if self.kind == "train":
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(self.x), self.y)
            loss.backward()
            self.optimizer.step()
            return loss.item()
        with self.torch.no_grad():
            return self.model(self.x).numpy()

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}


def _optimizer(optim, params, w: Workload):
    """The same optimizer in either framework (their constructors take the same arguments)."""
    if w.optimizer == "sgd":
        return optim.SGD(params, lr=w.lr, momentum=w.momentum)
    return optim.Adam(params, lr=w.lr)


def make_contender(name: str, w: Workload, data: WorkloadData) -> Contender:
    if name in (GRAPHC, GRAPHC_EAGER):
        return GraphcContender(w, data, compiled=name == GRAPHC)
    if name in (TORCH_EAGER, TORCH_COMPILE):
        return TorchContender(w, data, compiled=name == TORCH_COMPILE)
    raise BenchError(f"unknown contender {name!r}")


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
