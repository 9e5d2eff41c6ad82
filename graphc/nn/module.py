"""nn.Module: parameters, buffers and submodules with PyTorch's names and semantics."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from graphc import dispatch, state_version
from graphc.device import check_device, is_device
from graphc.errors import StateDictError
from graphc.nn.parameter import Parameter
from graphc.tensor import Tensor


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    def __init__(self) -> None:
        d = self.__dict__
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()
        d["_training"] = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args, **kwargs):
        dispatch.current().note_owner(self)
        return self.forward(*args, **kwargs)

    # ---- attributes ----------------------------------------------------------------------

    @property
    def training(self) -> bool:
        if dispatch.is_tracing():  # a compiled function must re-trace when the mode flips
            return dispatch.current().guard(
                lambda: self._training, f"{type(self).__name__}.training"
            )
        return self._training

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_training"] = bool(mode)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__ and isinstance(value, (Tensor, Module)):
            raise AttributeError(
                "cannot assign parameters or modules before Module.__init__() "
                "is called (call super().__init__() first)"
            )
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name, keep="_parameters")  # an existing slot keeps its position
            params[name] = value
            state_version.bump(self)
        elif isinstance(value, Module):
            self._forget(name, keep="_modules")
            modules[name] = value
            state_version.bump(self)
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    "(nn.Parameter or None expected)"
                )
            params[name] = None
            state_version.bump(self)
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r}")
            buffers[name] = value
            state_version.bump(self)
        elif name == "training":
            Module.training.fset(self, value)
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: str | None = None) -> None:
        """Removes `name` from every store but `keep` (whose entry is replaced in place)."""
        for store in ("_parameters", "_buffers", "_modules"):
            if store != keep:
                self.__dict__[store].pop(name, None)
        self.__dict__.pop(name, None)
        if keep != "_buffers":
            self._non_persistent.discard(name)

    def _check_name(self, name: str, kind: str, store: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        others = [s for s in ("_parameters", "_buffers", "_modules") if s != store]
        taken = name in self.__dict__ or hasattr(type(self), name)
        if name not in self.__dict__[store] and (
            taken or any(name in self.__dict__[s] for s in others)
        ):
            raise KeyError(f"attribute '{name}' already exists")

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters or name in self._buffers or name in self._modules:
            self._forget(name)
            state_version.bump(self)
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        self._check_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r}")
        self._forget(name, keep="_parameters")
        self._parameters[name] = param
        state_version.bump(self)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        self._check_name(name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r}")
        self._forget(name, keep="_buffers")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        state_version.bump(self)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module", "_modules")
        self._forget(name, keep="_modules")
        self._modules[name] = module
        state_version.bump(self)

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        mod = self
        for part in target.split(".") if target else []:
            mod = mod._modules[part]
        return mod

    # ---- traversal -----------------------------------------------------------------------

    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(
                    memo, f"{prefix}.{name}" if prefix else name, remove_duplicate
                )

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool):
        seen: set[int] = set()
        mods = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else [(prefix, self)]
        )
        for mod_prefix, m in mods:
            for name, t in getattr(m, store).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def _named_tensors(self, known: Mapping) -> Iterator[tuple[str, Tensor, str]]:
        """(name, tensor, kind) for tracing: parameters then buffers."""
        for name, p in self.named_parameters():
            yield name, p, "param"
        for name, b in self.named_buffers():
            yield name, b, "buffer"

    # ---- modes ---------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad = p.grad.detach() * 0

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs) -> Module:
        """to(device), to(dtype), to(device, dtype), to(tensor): PyTorch's forms, in place.
        The device must be the CPU; a dtype converts floating-point parameters and buffers."""
        from graphc import dtypes

        dtype = kwargs.get("dtype")
        check_device(kwargs.get("device"), "Module.to")
        for a in args:
            if is_device(a):
                check_device(a, "Module.to")
            elif isinstance(a, Tensor):
                dtype = a.dtype
            else:
                dtype = a
        if dtype is not None:
            dtype = dtypes.get(dtype)
            if not dtype.is_floating_point:
                raise TypeError(
                    f"nn.Module.to only accepts floating point dtypes, but got desired dtype "
                    f"{dtype.name}"
                )
            self._cast(dtype)
        return self

    def cpu(self) -> Module:
        return self

    def cuda(self, device=None) -> Module:
        check_device("cuda" if device is None else device, "Module.cuda")
        return self

    def float(self) -> Module:
        from graphc import dtypes

        return self._cast(dtypes.float32)

    def double(self) -> Module:
        from graphc import dtypes

        return self._cast(dtypes.float64)

    def _cast(self, dtype) -> Module:
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is not None and t.dtype.is_floating_point and t.dtype != dtype:
                        t._data = t._data.astype(dtype.np)
                        t._version = [0]
        state_version.bump(self)
        return self

    # ---- state dict ----------------------------------------------------------------------

    def state_dict(
        self, destination=None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, Tensor]:
        """name -> tensor, PyTorch's keys and layouts; values share memory with the module."""
        out = OrderedDict() if destination is None else destination
        for k, p in self._parameters.items():
            if p is not None:
                out[prefix + k] = p if keep_vars else p.detach()
        for k, b in self._buffers.items():
            if b is not None and k not in self._non_persistent:
                out[prefix + k] = b if keep_vars else b.detach()
        # Like PyTorch, a module reachable under two names is saved under both.
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=out, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copies values into the existing tensors (in place, so compiled steps stay valid)."""
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        values = {}
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = _to_numpy(state_dict[k])
            if tuple(v.shape) != tuple(t.shape):
                errors.append(
                    f"size mismatch for {k}: copying a param with shape "
                    f"{list(v.shape)} from checkpoint, the shape in current model is "
                    f"{list(t.shape)}."
                )
            else:
                values[k] = v
        if strict:
            if missing:
                errors.insert(
                    0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + "."
                )
            if unexpected:
                errors.insert(
                    1 if missing else 0,
                    "Unexpected key(s) in state_dict: "
                    + ", ".join(f'"{k}"' for k in unexpected)
                    + ".",
                )
        if errors:
            raise dispatch.user_error(
                StateDictError,
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
                + "\n  load a state_dict saved from the same model class (strict=False "
                "ignores missing and unexpected keys, not size mismatches)",
            )
        for k, v in values.items():
            t = own[k]
            t._check_eager()
            np.copyto(t._data, v.astype(t._data.dtype, copy=False))
            t._version[0] += 1
        return IncompatibleKeys(missing, unexpected)

    # ---- printing ------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines += extra.split("\n")
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        main = type(self).__name__ + "("
        if not lines:
            return main + ")"
        if len(lines) == 1 and not self._modules:
            return main + lines[0] + ")"
        return main + "\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(
            set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules)
        )


def _to_numpy(value: Any) -> np.ndarray:
    """Accepts graphc tensors, numpy arrays and anything array-like (PyTorch tensors too)."""
    if isinstance(value, Tensor):
        return value._concrete("load_state_dict")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a PyTorch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)
