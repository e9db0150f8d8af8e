"""HANet, the height-driven attention network (Choi et al. 2020, arXiv:2003.05128).

In urban scenes the class distribution depends strongly on the image row ("cars can't fly up in
the sky"). HANet turns that prior into per-row channel attention for a segmentation network:

1. width-wise pooling of a lower-level feature map ``X_l (b, c_l, h_l, w_l)`` and adaptive pooling
   of its height to ``rows`` bins: ``Z (b, c_l, rows)``;
2. 1-D convolutions along the height: a 1x1 conv to ``ceil(c_l / reduction)`` channels (rounded
   up to an even count for the sinusoid; + batch norm, ReLU), after which a sinusoidal encoding
   of the row index is *added* (the paper's position injection), then a 3x3 conv doubling the
   channels (+ BN, ReLU) and a final conv to the higher-level map's ``c_h`` channels
   (``layers=3``; ``layers=2`` skips the middle one);
3. a sigmoid gives ``A (b, c_h, rows)``, linearly interpolated to the target height ``h_h``;
4. ``X_h * A``, the same attention for every column of a row.

The height encoding uses the interleaved sinusoid with base 100 (the official code's choice for
narrow encodings) at row indices ``0 .. rows - 1``. The output always has ``X_h``'s shape, for any
height. Verified against a float64 re-implementation of steps 1-4 with explicit loops
(``tests/spatial/test_hanet.py``).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import DerivedTablesMixin, EncodingModule
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_dtype_matches,
    check_even,
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
    check_tensor,
)
from posenc.input.sinusoidal import sinusoidal


def height_encoding(
    rows: int,
    channels: int,
    *,
    base: float = 100.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(channels, rows)`` sinusoidal encoding of the row indices ``0 .. rows - 1`` in ``dtype`` (float32
    by default; float64 is formed from float64 angles, other dtypes are the float32 table cast)."""
    check_positive_int("rows", rows)
    check_even("channels", channels)
    check_float_dtype("dtype", dtype)
    # float64 positions give the sinusoid's float64 table, integer ones its float32 table
    index = torch.arange(rows, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.long)
    return sinusoidal(index, channels, base=base, interleaved=True).t().contiguous().to(dtype)


def row_pool(x: torch.Tensor, rows: int, *, pooling: Literal["mean", "max"] = "mean") -> torch.Tensor:
    """Width-wise pooling with the height pooled to ``rows`` bins: ``(b, c, h, w)`` -> ``(b, c, rows)``."""
    check_float_tensor("x", x, ndim=4)
    check_positive_int("rows", rows)
    check_choice("pooling", pooling, ("mean", "max"))
    if x.numel() == 0:  # adaptive pooling refuses empty inputs
        if x.shape[0] and x.shape[1]:
            raise ValueError(f"`x` must have pixels to pool into {rows} rows, got shape {tuple(x.shape)}")
        return x.new_zeros(x.shape[0], x.shape[1], rows)
    pool = F.adaptive_avg_pool2d if pooling == "mean" else F.adaptive_max_pool2d
    return pool(x, (rows, 1)).squeeze(-1)


@register(
    "hanet",
    paper="Choi et al. 2020, arXiv:2003.05128",
    summary="Height-driven attention: per-row channel attention from width-pooled features and a height encoding.",
)
class HANet(DerivedTablesMixin, EncodingModule):
    """Height-driven attention block: ``forward(x_low, x_high=None)`` -> ``x_high * A`` (``x_high``'s shape).

    Args:
        in_channels: channels ``c_l`` of the lower-level map the attention is computed from.
        out_channels: channels ``c_h`` of the map it reweights (default ``in_channels``).
        rows: height bins of the pooled map (16 in the paper: 128 / 8).
        reduction: channel reduction of the first 1-D conv (``ceil(c_l / reduction)`` channels).
        layers: 2 or 3 1-D convolutions.
        kernel_size: odd kernel of the last 1-D conv (3 in the paper).
        pooling: ``"mean"`` (the paper) or ``"max"``.
        base: wavelength base of the height encoding.
    """

    model_arguments = ("in_channels", "out_channels", "kernel_size")
    #: How the reference CNN uses it: attention from its stem features onto its last features.
    cnn_role: ClassVar[str] = "attention"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        rows: int = 16,
        reduction: int = 8,
        layers: int = 3,
        kernel_size: int = 3,
        pooling: Literal["mean", "max"] = "mean",
        base: float = 100.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", in_channels if out_channels is None else out_channels)
        self.rows = check_positive_int("rows", rows)
        check_positive_int("reduction", reduction)
        check_int("layers", layers, minimum=2, maximum=3)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd to keep the number of rows, got {kernel_size}")
        self.pooling = check_choice("pooling", pooling, ("mean", "max"))
        self.base = check_float("base", base, positive=True)
        mid = math.ceil(in_channels / reduction)
        self.mid = mid + mid % 2  # the sinusoid needs an even width
        # the layers' weights (the middle block at most 2 mid x 3 x mid) and the (mid, rows) encoding
        count = self.mid * (in_channels + 6 * self.mid + rows + 2 * kernel_size * self.out_channels) + self.out_channels
        sizes = {"in_channels": in_channels, "out_channels": self.out_channels, "rows": rows, "kernel_size": kernel_size}
        check_layers_fit(sizes, count, dtype, device)
        kw = {"device": device, "dtype": dtype}
        self.first = nn.Sequential(
            nn.Conv1d(in_channels, self.mid, 1, bias=False, **kw), nn.BatchNorm1d(self.mid, **kw), nn.ReLU()
        )
        last_in = self.mid
        if layers == 3:
            self.middle = nn.Sequential(
                nn.Conv1d(self.mid, 2 * self.mid, 3, padding=1, **kw), nn.BatchNorm1d(2 * self.mid, **kw), nn.ReLU()
            )
            last_in = 2 * self.mid
        else:
            self.middle = nn.Identity()
        self.last = nn.Conv1d(last_in, self.out_channels, kernel_size, padding=kernel_size // 2, **kw)
        self.register_buffer("encoding", torch.empty(self.mid, rows, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        self.encoding = height_encoding(self.rows, self.mid, base=self.base, device=device)

    def attention(self, x_low: torch.Tensor, height: int) -> torch.Tensor:
        """Per-row channel attention ``(b, out_channels, height, 1)`` in ``(0, 1)`` from ``x_low``."""
        check_float_tensor("x_low", x_low, ndim=4)
        if x_low.shape[1] != self.in_channels:
            raise ValueError(f"`x_low` must have in_channels={self.in_channels} channels, got shape {tuple(x_low.shape)}")
        check_positive_int("height", height)
        z = row_pool(x_low, self.rows, pooling=self.pooling)  # (b, c_l, rows)
        # a float64 network gets the float64 encoding, others the cached float32 one
        wide = z.dtype == torch.float64
        encoding = height_encoding(self.rows, self.mid, base=self.base, device=z.device, dtype=z.dtype) if wide else self.encoding
        q = self.first(z) + encoding.to(z.dtype)  # (b, mid, rows)
        a = torch.sigmoid(self.last(self.middle(q)))  # (b, c_h, rows)
        # (b, c_h, rows) -> (b, c_h, height) -> (b, c_h, height, 1): one value per row
        return F.interpolate(a, size=height, mode="linear", align_corners=False).unsqueeze(-1)

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor | None = None) -> torch.Tensor:
        """x_low: ``(b, in_channels, h_l, w_l)``; x_high: ``(b, out_channels, h, w)`` (default ``x_low``)."""
        check_dtype_matches("x_low", check_tensor("x_low", x_low), self)
        if x_high is None:
            x_high = x_low
        check_dtype_matches("x_high", check_float_tensor("x_high", x_high, ndim=4), self)
        if x_high.shape[1] != self.out_channels:
            raise ValueError(f"`x_high` must have out_channels={self.out_channels} channels, got shape {tuple(x_high.shape)}")
        if x_low.shape[0] != x_high.shape[0]:
            raise ValueError(f"`x_low` and `x_high` must share the batch size, got {x_low.shape[0]} and {x_high.shape[0]}")
        if x_high.numel() == 0:  # nothing to reweight: an empty map of x_high's shape
            return x_high.clone()
        if x_low.ndim == 4 and 0 in x_low.shape[-2:]:
            raise ValueError(
                f"`x_low` must have pixels to pool into the height attention, got shape {tuple(x_low.shape)} "
                f"for a non-empty `x_high` {tuple(x_high.shape)}"
            )
        return x_high * self.attention(x_low, x_high.shape[-2])

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, rows={self.rows}, mid={self.mid}, "
            f"pooling={self.pooling!r}, base={self.base}"
        )
