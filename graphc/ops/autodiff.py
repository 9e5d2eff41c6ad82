"""`grad`: the placeholder a traced `loss.backward()` leaves in the graph.

`grad(loss, wrt)` stands for d loss / d wrt (with an optional explicit output cotangent as a
third input). The `derive_backward` pass replaces every placeholder with the derived backward
subgraph, so no later stage ever sees one.
"""

from __future__ import annotations

from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import NoGrad, defop


def _grad_rule(loss: TensorType, wrt: TensorType, seed: TensorType | None = None) -> TensorType:
    if not loss.dtype.is_floating_point or not wrt.dtype.is_floating_point:
        raise ShapeError(f"grad: only floating-point tensors have gradients ({loss} wrt {wrt})")
    if seed is None and loss.numel != 1:
        raise ShapeError(
            f"grad can be implicitly created only for scalar outputs; {loss} "
            "needs an explicit gradient: loss.backward(gradient)"
        )
    if seed is not None and seed != loss:
        raise ShapeError(f"grad: the output gradient {seed} must match the output {loss}")
    return wrt


def _grad_ref(*arrays):
    raise AssertionError("internal error: grad placeholders are expanded by derive_backward")


defop(
    "grad",
    type_rule=_grad_rule,
    ref=_grad_ref,
    vjp=NoGrad(
        "placeholders are expanded by derive_backward before anything differentiates",
        unsupported=True,
    ),
    traits=("placeholder",),
    doc="d inputs[0] / d inputs[1], seeded by inputs[2] if given",
)
