"""The measured workload, shared by every contender: the model class, the initial weights, the
fixed synthetic batch, and the FLOPs of one step counted on graphc's optimised graph.

The weights and the batch are made once per workload (by the `prepare` child) and stored in
an .npz file that every other child loads, so a graphc-only child never imports PyTorch and
all contenders provably start from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.bench.config import BenchError, Workload
from graphc.ir import Graph

# anchors.md "The physical floor": dense conv/linear FLOPs of one ConvNet training step per
# image (1 MAC = 2 FLOPs, no input gradient for conv1): 2 x 1,602,360. Batch 64 -> 205.1 MFLOP.
ANCHOR_DENSE_FLOPS_PER_IMAGE = {"convnet": 2 * 1_602_360}


@dataclass
class WorkloadData:
    state: dict[str, np.ndarray]  # the model's initial state_dict (PyTorch names and layouts)
    x: np.ndarray  # float32 [batch, *input_shape] (token ids, int64, for a text model)
    y: np.ndarray  # int64 [batch] class labels
    num_classes: int


def model_class(spec: str) -> type:
    """The graphc.nn.Module class that --model names (built-in name, FILE.py:Class, or
    package.module:Class)."""
    from graphc.training.build import resolve_model_class

    cls, _ = resolve_model_class(spec)
    return cls


def input_shape(w: Workload) -> tuple[int, ...]:
    from graphc.models import INPUT_SHAPES

    if w.input_shape:
        return tuple(w.input_shape)
    if w.model in INPUT_SHAPES:
        return tuple(INPUT_SHAPES[w.model])
    raise BenchError(f"--model {w.model}: give the shape of one sample with --input-shape C,H,W")


def num_classes(cls: type, shape: tuple[int, ...], seed: int) -> int:
    """Runs the graphc model eagerly on two zero samples and reads the logits' width (for a
    model that reconstructs its input: checks the output's shape; its labels are unused)."""
    import graphc
    from graphc.models import sample_inputs

    graphc.manual_seed(seed)
    net = cls()
    net.eval()
    try:
        with graphc.no_grad():
            out = net(graphc.from_numpy(sample_inputs(cls, shape, 2)))
    except graphc.GraphcError as e:
        raise BenchError(f"the model does not accept samples of shape {list(shape)}: {e}") from None
    from graphc.training.objective import RECONSTRUCTION, objective_of

    if objective_of(cls) == RECONSTRUCTION:
        if not isinstance(out, graphc.Tensor) or tuple(out.shape) != (2, *shape):
            raise BenchError(
                f"{cls.__name__} reconstructs its input: it must return outputs of the "
                f"input's shape [batch, {', '.join(map(str, shape))}]"
            )
        return 10  # labels are drawn but not used
    if not isinstance(out, graphc.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        raise BenchError("the model must return logits of shape [batch, classes]")
    return int(out.shape[1])


def initial_state(cls: type, twin: type | None, seed: int) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation (through the twin) when PyTorch is there, else graphc's
    own (which follows PyTorch's rules, with graphc's random stream)."""
    if twin is not None:
        import torch

        torch.manual_seed(seed)
        sd = twin().state_dict()
        return {k: v.detach().cpu().numpy().copy() for k, v in sd.items()}
    import graphc

    graphc.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in cls().state_dict().items()}


def make_batch(
    batch: int, shape: tuple[int, ...], classes: int, seed: int, cls: type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch: normal float32 inputs, or random token ids for a text model `cls`."""
    from graphc.models import sample_inputs, takes_tokens

    rng = np.random.default_rng(seed)
    if cls is not None and takes_tokens(cls):
        x = sample_inputs(cls, shape, batch, seed)
    else:
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
    y = rng.integers(0, classes, size=batch, dtype=np.int64)
    return x, y


def save(path: Path, data: WorkloadData) -> None:
    arrays = {f"state/{k}": v for k, v in data.state.items()}
    np.savez(path, x=data.x, y=data.y, num_classes=np.int64(data.num_classes), **arrays)


def load(path: Path) -> WorkloadData:
    with np.load(path) as f:
        state = {k[len("state/") :]: f[k] for k in f.files if k.startswith("state/")}
        return WorkloadData(state, f["x"], f["y"], int(f["num_classes"]))


def count_flops(graph: Graph) -> dict[str, int]:
    """FLOPs of one call of an optimised graph, from each op's own `flops` rule.

    dense: contractions only (conv2d and its gradients, matmul) — what anchors.md counts and
    what GFLOP/s and % of peak are computed from; full: every op that has a flops rule
    (elementwise, pooling, reductions, the optimizer update as well). A loop counts its
    step's ops once per step."""
    from graphc.ops import OPS

    dense = full = 0
    for n in graph.nodes:
        if n.is_input:
            continue
        if n.op == "scan":  # a loop: its step's work, once per step
            step = count_flops(n.attrs["body"].graph)
            dense += n.attrs["length"] * step["dense"]
            full += n.attrs["length"] * step["full"]
            continue
        op = OPS[n.op]
        if op.flops is None:
            continue
        f = int(op.flops(n.type, *[i.type for i in n.inputs], **n.attrs))
        full += f
        if "contraction" in op.traits:
            dense += f
    return {"dense": dense, "full": full}


def anchor_flops(w: Workload) -> int | None:
    per_image = ANCHOR_DENSE_FLOPS_PER_IMAGE.get(w.model)
    if per_image is None or w.kind != "train" or w.input_shape not in (None, [3, 32, 32]):
        return None
    return per_image * w.batch_size
