"""The frontend: tracing user Python code into graphs, and graphc.compile."""

from graphc.frontend.compile import CompiledFunction, CompiledModule, compile
from graphc.frontend.trace import Trace

__all__ = ["compile", "CompiledFunction", "CompiledModule", "Trace"]
