"""Every op graphc knows, each defined once (see registry.py for what an op carries)."""

# Importing the modules registers their ops.
from graphc.ops import (  # noqa: E402, F401
    autodiff,
    creation,
    distributed,
    elementwise,
    index,
    linalg,
    loss,
    nn,
    scan,
    shape,
)
from graphc.ops.registry import OPS, REQUIRED, NoGrad, Op, defop, get_op

__all__ = ["OPS", "REQUIRED", "NoGrad", "Op", "defop", "get_op"]
