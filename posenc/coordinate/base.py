"""The interface shared by coordinate encodings: ``(*, in_dim)`` coordinates to ``(*, out_dim)`` features.

Unlike the sequence encodings, a coordinate encoding is a feature map applied to each point on its
own: the leading axes are any batch shape, and the width of the result (``out_dim``) is known from
the configuration alone, so a network after it can be built before any data is seen.
"""

from __future__ import annotations

import torch

from posenc.core.base import EncodingModule
from posenc.core.validation import can_read_values, check_finite, check_float_tensor, check_positive_int


class Encoding(EncodingModule):
    """Base class of coordinate encodings; subclasses set ``in_dim`` and implement ``out_dim``, ``forward``.

    ``keep_dtype_buffers`` names buffers whose float dtype is kept when the module is cast (for
    example a fixed random projection drawn in float32 must not be rounded by ``.to(torch.bfloat16)``);
    they still follow the module's device.
    """

    keep_dtype_buffers: tuple[str, ...] = ()

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` must be a float tensor ``(*, in_dim)``."""
        x = check_float_tensor(name, x)
        if x.ndim == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"`{name}` must have last dimension in_dim={self.in_dim}, got shape {tuple(x.shape)}")
        return check_finite(name, x)

    def _apply(self, fn, recurse=True):
        before = {name: getattr(self, name) for name in self.keep_dtype_buffers}
        module = super()._apply(fn, recurse)
        for name, old in before.items():
            new = getattr(self, name)
            if old is not None and new is not None and new.dtype != old.dtype and not old.is_meta:
                # re-cast from the pre-cast values so a round trip through half precision loses nothing
                setattr(self, name, old.to(device=new.device))
        return module


def check_unit_box(name: str, x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Refuse coordinates outside ``[low, high]`` (eager mode; compiled code and ``torch.func`` transforms skip the
    host read and clamp)."""
    if x.numel() and can_read_values(x) and not bool(((x >= low) & (x <= high)).all()):
        raise ValueError(
            f"`{name}` must lie in [{low}, {high}] (the encoding's declared bounds), got values in "
            f"[{x.min().item()}, {x.max().item()}]"
        )
    return x
