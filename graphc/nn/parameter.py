"""nn.Parameter: a tensor a Module registers as a parameter (requires_grad by default)."""

from __future__ import annotations

import numpy as np

from graphc.tensor import Tensor


class Parameter(Tensor):
    def __init__(self, data: Tensor | np.ndarray | None = None, requires_grad: bool = True):
        if data is None:
            array = np.zeros((0,), np.float32)
        elif isinstance(data, Tensor):
            data._check_eager()
            array = data._data
        else:
            array = np.asarray(data)
        self._init(array, None, None)
        if isinstance(data, Tensor):
            self._version = data._version
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        raise TypeError("graphc tensors are not pickled; use graphc.save / graphc.load")
