"""graphc.device and graphc.cuda: the device spellings PyTorch code carries along.

graphc compiles for the CPU it runs on, so "cpu" is the only device. Code written for
PyTorch (`device = torch.device("cuda" if torch.cuda.is_available() else "cpu")`,
`model.to(device)`, `x.to(device)`) runs unchanged; asking for any other device is an error
that says so, rather than a silent CPU run.
"""

from __future__ import annotations

from graphc import dispatch
from graphc.errors import GraphcError

# Device types PyTorch knows: a string naming one of these is a device, not a dtype.
DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "hip", "xla", "meta", "ipu", "mtia"})


class device:  # noqa: N801  (torch.device)
    """A device name: type and optional index ("cpu", "cpu:0", device("cuda", 1))."""

    def __init__(self, type: str | device, index: int | None = None) -> None:
        if isinstance(type, device):
            type, index = type.type, type.index
        kind, _, idx = str(type).partition(":")
        if kind not in DEVICE_TYPES:
            raise GraphcError(
                f"expected one of {', '.join(sorted(DEVICE_TYPES))} device type at start of "
                f"device string: {type}"
            )
        self.type = kind
        self.index = int(idx) if idx else index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type={self.type!r}{index})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except GraphcError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def is_device(value: object) -> bool:
    """Whether a `.to(...)` argument names a device (rather than a dtype)."""
    if isinstance(value, device):
        return True
    return isinstance(value, str) and value.partition(":")[0] in DEVICE_TYPES


def check_device(value: object, what: str) -> None:
    """Accepts the CPU; any other device is a ValueError naming the user's line (as layers'
    device= arguments)."""
    if value is None or device(value).type == "cpu":
        return
    raise dispatch.user_error(
        ValueError,
        f"{what}: graphc runs on the CPU only, so device {str(value)!r} is not available; "
        "use 'cpu' (graphc.cuda.is_available() is False, so the usual "
        "`device('cuda' if cuda.is_available() else 'cpu')` picks it)",
    )


class cuda:  # noqa: N801  (the torch.cuda namespace, as far as CPU-only code asks it)
    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 0

    @staticmethod
    def manual_seed(seed: int) -> None:
        """No CUDA generator to seed (torch.cuda.manual_seed is a no-op without CUDA too)."""

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        """As manual_seed."""


class _mps:  # noqa: N801  (torch.backends.mps)
    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def is_built() -> bool:
        return False


class backends:  # noqa: N801  (the torch.backends namespace, as far as CPU-only code asks it)
    mps = _mps
