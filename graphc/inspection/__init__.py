"""Inspection: the IR after every pass (text, JSON, DOT), fusion and memory reports, FLOPs and
bytes, one kernel's LLVM IR and assembly, a per-kernel profile, and the native-vs-reference
numerics check. `graphc inspect` / `graphc check` and `CompiledFunction.inspect` use it."""

from graphc.inspection.common import InspectError
from graphc.inspection.core import Inspection

__all__ = ["Inspection", "InspectError"]
