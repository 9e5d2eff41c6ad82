"""Training steps as users write them, traced for tests: the step function, a backend that
plans tiles for this host without compiling, and arrays for a traced graph's inputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
from graphc.codegen.backend import host_vectors
from graphc.frontend.compile import CompiledFunction, interpreter_executable
from graphc.ir import Graph


def sgd_step(net: nn.Module, lr: float = 0.05, momentum: float = 0.9) -> Callable:
    """zero_grad, cross-entropy, backward, SGD step; returns the loss."""
    opt = graphc.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def planned_for_host(graph: Graph):
    """The interpreter, but with tiles planned as for native code (it supplies vectors)."""
    return interpreter_executable(graph)


planned_for_host.vectors = host_vectors


def planned_graph(net: nn.Module, x: np.ndarray, y: np.ndarray, lr: float = 0.05):
    """The optimised training graph of `net` on a batch, planned for this host, and arrays
    for its inputs."""
    compiled = CompiledFunction(sgd_step(net, lr), backend=planned_for_host)
    graph = compiled.trace(graphc.from_numpy(x), graphc.from_numpy(y)).graph
    return graph, input_arrays(graph, net, x, y, lr)


def input_arrays(graph: Graph, net: nn.Module, x, y, lr: float = 0.05) -> list[np.ndarray]:
    """Arrays for the graph's inputs, by their traced names (parameters, state, batch, lr)."""
    x, y = np.asarray(x), np.asarray(y)
    params = {name: p.detach().numpy() for name, p in net.named_parameters()}
    out = []
    for node in graph.inputs:
        if node.name in params:
            out.append(params[node.name].copy())
        elif node.dtype.name == "int64":
            out.append(y.copy())
        elif tuple(node.shape) == x.shape:
            out.append(x.copy())
        elif node.shape == ():
            out.append(np.array(lr, dtype=node.dtype.np))
        else:  # optimizer state (momentum buffers)
            rng = np.random.default_rng(len(out))
            out.append((0.1 * rng.standard_normal(node.shape)).astype(node.dtype.np))
    return out
