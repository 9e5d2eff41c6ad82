"""The PyTorch twin of a graphc model: the same source file, run again with `graphc` imports
resolved to `torch`.

graphc's API is PyTorch's (same names, arguments, parameter names and layouts), so a model
written against `graphc.nn` is also a valid `torch.nn` model. Re-running its module's source
with an `__import__` that maps `graphc` -> `torch`, `graphc.nn` -> `torch.nn`, ... yields a
PyTorch class with the same structure and state_dict keys, without anyone writing the model
twice. The mapping applies to that one file only; helpers it imports from other files stay
graphc's, and a file that uses graphc-only APIs has no twin (the error says so).
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import sys
import types
from pathlib import Path

from graphc.bench.config import BenchError


def _torch_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (name == "graphc" or name.startswith("graphc.")):
        name = "torch" + name[len("graphc") :]
    return builtins.__import__(name, globals, locals, fromlist, level)


def torch_twin(cls: type) -> type:
    """The torch.nn.Module class defined by re-running `cls`'s source file against torch."""
    import torch

    path = inspect.getsourcefile(cls)
    if path is None or not Path(path).is_file():
        raise BenchError(f"no source file for {cls.__qualname__}: cannot build a PyTorch twin")
    source = Path(path).read_text()
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:12]
    name = f"graphc_bench_torch_twin_{digest}"
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__file__ = path
        module.__dict__["__builtins__"] = {**vars(builtins), "__import__": _torch_import}
        sys.modules[name] = module  # dataclasses and annotations look their module up
        try:
            exec(compile(source, path, "exec"), module.__dict__)
        except Exception as e:
            del sys.modules[name]
            raise BenchError(
                f"cannot build the PyTorch twin of {cls.__qualname__} from {path} "
                f"({type(e).__name__}: {e}); the file must use only the PyTorch-compatible "
                "API (graphc, graphc.nn, graphc.nn.functional)"
            ) from None
    twin = module
    for part in cls.__qualname__.split("."):
        twin = getattr(twin, part, None)
    if not (inspect.isclass(twin) and issubclass(twin, torch.nn.Module)):
        raise BenchError(f"{path} does not define {cls.__qualname__} as a torch.nn.Module twin")
    return twin
