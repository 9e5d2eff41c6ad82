"""graphc.utils: `graphc.utils.data` is graphc.data, where PyTorch scripts look for
DataLoader and friends (torch.utils.data)."""

from graphc import data

__all__ = ["data"]
