"""The optimizer in an exported library: its per-parameter state (saved as
"optimizer/state/<i>/<key>", as graphc.save names an optimizer's state_dict under
"optimizer"), its groups' learning rates, and the program that computes the host scalars of
every call from the recipes the host functions carry (graphc/host_scalars.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.capi.layout import ExportError, OptimizerEntry, Scalar, StateBlock, Stored
from graphc.host_scalars import AdamScalars, RandomScalars, SGDScalars


def find_optimizer(owners: Sequence[object]) -> Any:
    """The optimizer the step stepped, if any."""
    optimizers = [o for o in owners if hasattr(o, "param_groups")]
    if len(optimizers) > 1:
        raise ExportError(
            "the step steps two optimizers; a library holds one (use parameter groups)"
        )
    return optimizers[0] if optimizers else None


def param_index(optimizer) -> dict[int, int]:
    """id(param) -> its number in the optimizer's state_dict (group order)."""
    index: dict[int, int] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            index.setdefault(id(p), len(index))
    return index


def optimizer_entries(optimizer, state: StateBlock) -> list[OptimizerEntry]:
    """Each parameter's state, in state_dict order, added to the state block."""
    from graphc.tensor import Tensor

    entries: list[OptimizerEntry] = []
    index = param_index(optimizer)
    for g in optimizer.param_groups:
        for p in g["params"]:
            st = optimizer.state.get(p)
            keys = [k for k in (st or {}) if not k.startswith("_")]
            if not keys or any(e.index == index[id(p)] for e in entries):
                continue
            first = len(state.tensors)
            for k in keys:
                v = st[k]
                if not isinstance(v, Tensor) or v._data is None:
                    raise ExportError(
                        f"{type(optimizer).__name__} keeps {k}={v!r} per parameter, which is "
                        "not a tensor; a library carries tensor state only"
                    )
                name = f"optimizer/state/{index[id(p)]}/{k}"
                stored = Stored(name, None, state.value(v), role="optimizer", entry=len(entries))
                state.add(stored, v._data)
            # PyTorch has no state for a parameter before its first step; graphc makes it
            # at the trace, marked fresh (SGD) or with step 0 (Adam).
            fresh = st.get("_fresh", False) or ("step" in st and float(st["step"]._data) == 0)
            entries.append(OptimizerEntry(index[id(p)], keys, first, not fresh))
    return entries


def learning_rates(optimizer) -> tuple[list[float], list[float]]:
    """Each group's lr, and its ratio to the first group's: the C `lr` sets the first
    group's, and the others keep their ratio to it (as a schedule scales every group)."""
    if optimizer is None:
        return [], []
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    first = lrs[0]
    ratio = [1.0 if first == 0 or lr == first else lr / first for lr in lrs]
    return ratio, lrs


def scalar_program(
    groups: Sequence, optimizer: Any, entries: list[OptimizerEntry], state: StateBlock
) -> tuple[list[tuple[tuple[int, int], Scalar]], int | None]:
    """Every host function's values in call order, as recipe ops, each keyed by (id(group),
    k) so its graph input finds its slot; and the random-number state's index, if any.
    Values no graph input reads are computed too: the functions' effects (a step count, a
    first-step mark, the generator's offset) happen on every call whatever the graph reads."""
    program: list[tuple[tuple[int, int], Scalar]] = []
    rng: int | None = None
    entry_of = {}
    if optimizer is not None:
        index = param_index(optimizer)
        by_param = {e.index: k for k, e in enumerate(entries)}
        for p, st in optimizer.state.items():
            if id(p) in index and index[id(p)] in by_param:
                entry_of[id(st)] = by_param[index[id(p)]]
    for group in groups:
        recipe, dtype = group.recipe, np.dtype(group.dtype)
        if recipe is None:
            name = getattr(group.fn, "__qualname__", repr(group.fn))
            raise ExportError(
                f"the step computes values on the host with {name}, which a library without "
                "Python cannot run; export supports the SGD, Adam and AdamW optimizers and "
                "random draws (dropout), not collectives or custom host functions"
            )
        if isinstance(recipe, RandomScalars):
            if rng is None:
                seed_offset = np.array([recipe.generator.seed, recipe.generator.offset], np.int64)
                rng = state.add(Stored("rng", None, seed_offset, role="rng"), seed_offset)
            ops = [
                Scalar("rng_seed", "seed", dtype, tensor=rng),
                Scalar("rng_offset", "offset", dtype, tensor=rng, n=int(recipe.n)),
            ]
        elif isinstance(recipe, (SGDScalars, AdamScalars)):
            if recipe.optimizer is not optimizer:
                raise AssertionError("host scalars of an optimizer the trace did not note")
            ops = _optimizer_ops(recipe, optimizer, entry_of, state, dtype)
        else:
            raise ExportError(f"no C translation for host values {type(recipe).__name__}")
        program += [((id(group), k), op) for k, op in enumerate(ops)]
    return program, rng


def _optimizer_ops(recipe, optimizer, entry_of, state: StateBlock, dtype) -> list[Scalar]:
    """The ops of SGD's or Adam's host function, value for value (see host_scalars.py)."""
    g = next(i for i, grp in enumerate(optimizer.param_groups) if grp is recipe.group)
    group = recipe.group
    entries = [entry_of[id(st)] for st in recipe.states]
    if isinstance(recipe, SGDScalars):
        ops = [Scalar("lr", "lr", dtype, group=g)]
        for i, e in enumerate(entries):
            keep = float(group["momentum"])
            mix = 1.0 - float(group["dampening"])
            ops.append(Scalar("sgd_keep", f"keep{i}", dtype, group=g, entry=e, a=keep))
            ops.append(Scalar("sgd_mix", f"mix{i}", dtype, group=g, entry=e, a=mix))
        return ops
    beta1, beta2 = (float(b) for b in group["betas"])
    decay = float(group["weight_decay"])
    ops = [
        Scalar("lr", "lr", dtype, group=g),
        Scalar("adam_decay", "decay", dtype, group=g, a=decay),
    ]
    for i, e in enumerate(entries):
        step = next(
            k for k, t in enumerate(state.tensors) if t.entry == e and t.name.endswith("/step")
        )
        if state.tensors[step].value.dtype != np.float32 or state.tensors[step].value.shape != ():
            raise ExportError("Adam's step count must be a float32 scalar tensor")
        common = dict(group=g, entry=e, tensor=step)
        ops.append(Scalar("adam_step", f"step_size{i}", dtype, a=beta1, **common))
        ops.append(Scalar("adam_bc2", f"bias_correction2_sqrt{i}", dtype, a=beta2, **common))
    return ops
