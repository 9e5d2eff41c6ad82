"""Optimizer: parameter groups, per-parameter state and PyTorch's state_dict format.

Updates are written with tensor ops under no_grad, so the same code runs eagerly and inside a
compiled step. Inside a trace, two kinds of hyperparameters are told apart:
- `self._const(group, key)`: baked into the graph; a later change re-traces (momentum, betas);
- `self._runtime(fn, names, params)`: recomputed on the host at every call and fed in as
  scalars (learning rate, Adam's step-dependent bias corrections, SGD's first-step momentum
  mixing), so a schedule never re-traces.
The update arithmetic mirrors PyTorch's CPU kernels rounding for rounding (arith.py).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from graphc import dispatch, dtypes, state_version
from graphc.errors import OptionError, StateDictError
from graphc.tensor import Tensor


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required: Any = _Required()


class Optimizer:
    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors "
                "or dicts, but got a Tensor"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict[str, Any]) -> None:
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if params and isinstance(params[0], tuple):  # named parameters, as torch 2.x accepts
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        for p in params:
            if not isinstance(p, Tensor) or not p.is_leaf:
                raise ValueError("optimizers can only optimize leaf tensors")
        if len({id(p) for p in params}) != len(params):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "each is updated once per duplicate",
                UserWarning,
                stacklevel=3,
            )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(
                    f"parameter group didn't specify a value of required optimization parameter {k}"
                )
            group.setdefault(k, v)
        group["params"] = params
        self.param_groups.append(group)
        state_version.bump(self)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad = p.grad.detach() * 0

    @dispatch.no_grad()
    def step(self, closure: Callable | None = None):
        """One update of every parameter group; `closure` re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with dispatch.enable_grad():
                loss = closure()
        self._begin_step()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError

    # ---- helpers for step() ----------------------------------------------------------------

    def _begin_step(self) -> None:
        dispatch.current().note_owner(self)

    @staticmethod
    def _const(group: dict, key: str):
        return dispatch.current().guard(lambda: group[key], f"optimizer hyperparameter {key}")

    @staticmethod
    def _runtime(
        fn: Callable[[], Sequence[float]],
        names: Sequence[str],
        params: Sequence[Tensor],
        recipe: object = None,
    ) -> tuple:
        """Host-computed scalars in the parameters' dtype (float64 if they mix): a float32
        model gets float32(lr) exactly as PyTorch rounds its Python-float hyperparameters,
        and a float64 model keeps full precision. `recipe`: what fn computes, as data
        (graphc/host_scalars.py), so that an exported library can compute it too."""
        kinds = {p.dtype for p in params}
        dtype = kinds.pop() if len(kinds) == 1 else dtypes.float64
        return dispatch.current().runtime_scalars(fn, names, dtype, recipe)

    def _active(self, group: dict) -> list[tuple[Tensor, Tensor]]:
        """(param, grad) for the parameters that have a gradient now."""
        out = []
        for p in group["params"]:
            g = p.grad
            if g is not None:
                out.append((p, g))
        return out

    def _named_tensors(self, known: Mapping) -> Iterable[tuple[str, Tensor, str]]:
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                pname = known.get(id(p), (f"group{gi}.param{pi}",))[0]
                for k, v in self.state.get(p, {}).items():
                    if isinstance(v, Tensor):
                        yield f"{pname}.{k}", v, "state"

    # ---- state dict ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's format: {"state": {index: {name: tensor}}, "param_groups": [...]}, with
        parameters numbered in group order; the tensors share memory with the optimizer."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {
                        k: (v.detach() if isinstance(v, Tensor) else v)
                        for k, v in self.state[p].items()
                        if not k.startswith("_")
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads graphc's or PyTorch's optimizer state (torch tensors are accepted).

        Everything is checked before anything changes; existing state tensors are
        overwritten in place, so compiled steps stay valid."""
        groups = state_dict.get("param_groups")
        if groups is None or len(groups) != len(self.param_groups):
            raise StateDictError("loaded state dict has a different number of parameter groups")
        for mine, theirs in zip(self.param_groups, groups, strict=True):
            if len(mine["params"]) != len(theirs["params"]):
                raise StateDictError(
                    "loaded state dict contains a parameter group that doesn't "
                    "match the size of optimizer's group"
                )
        by_index = {}
        for mine, theirs in zip(self.param_groups, groups, strict=True):
            for p, i in zip(mine["params"], theirs["params"], strict=True):
                by_index[int(i)] = p
        loaded = []
        for key, st in state_dict.get("state", {}).items():
            p = by_index.get(int(key))
            if p is None:
                raise StateDictError(f"state for unknown parameter index {key}")
            loaded.append((p, _checked_state(p, st)))
        for p, st in loaded:
            self._load_param_state(p, st)
        for mine, theirs in zip(self.param_groups, groups, strict=True):
            for k, v in theirs.items():
                if k not in ("params", "param_names"):
                    mine[k] = tuple(v) if k == "betas" else v

    def _load_param_state(self, p: Tensor, loaded: Mapping[str, Any]) -> None:
        mine = self.state[p]
        for k, v in loaded.items():
            cur = mine.get(k)
            if not isinstance(v, np.ndarray):
                mine[k] = v
            elif isinstance(cur, Tensor) and cur._data is not None and cur.shape == v.shape:
                np.copyto(cur._data, v.astype(cur._data.dtype, copy=False))  # in place
                cur._version[0] += 1
            else:
                mine[k] = Tensor._wrap(v.copy())
                state_version.bump(self)
        mine.pop("_fresh", None)


def _checked_state(p: Tensor, loaded: Mapping[str, Any]) -> dict[str, Any]:
    """One parameter's loaded state as numpy arrays in graphc's dtypes, shapes checked."""
    out: dict[str, Any] = {}
    for k, v in loaded.items():
        arr = _array(v)
        if k == "step":  # a float32 scalar tensor since PyTorch 1.12, a number before
            out[k] = np.array(float(v if arr is None else arr.reshape(())), np.float32)
        elif arr is None:
            out[k] = v
        elif arr.shape != tuple(p.shape):
            raise StateDictError(
                f"optimizer state {k!r} has shape {list(arr.shape)}, "
                f"but its parameter has shape {list(p.shape)}"
            )
        else:
            out[k] = arr.astype(p._type().dtype.np) if arr.dtype.kind == "f" else arr
    return out


def _array(v) -> np.ndarray | None:
    """numpy value of a graphc/PyTorch tensor or array; None for numbers and other values."""
    if isinstance(v, Tensor):
        return np.asarray(v._concrete("load_state_dict"))
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        return v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return v
    return None


def check_range(what: str, value, high: float | None = None) -> None:
    """PyTorch's hyperparameter check ('Invalid learning rate: -1'), in [0, high) when high is
    given, that also refuses nan and inf, which PyTorch lets through and which turn every
    parameter into nan at the first step."""
    if isinstance(value, Tensor):
        return  # a tensor learning rate is checked by its user
    ok = 0.0 <= value < (high if high is not None else float("inf"))
    if not ok:
        wanted = f"in [0, {high:g})" if high is not None else ">= 0"
        raise dispatch.user_error(
            OptionError, f"Invalid {what}: {value} (it must be a finite number {wanted})"
        )


def _no_differentiable(differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            "differentiable=True (gradients through the optimizer step) is not supported"
        )


def zeros_state(p: Tensor) -> Tensor:
    """A state tensor like p, created eagerly even while tracing (it lives across calls)."""
    return Tensor._wrap(np.zeros(p.shape, p._type().dtype.np))


def scalar_state(value: float) -> Tensor:
    return Tensor._wrap(np.array(value, np.float32))
