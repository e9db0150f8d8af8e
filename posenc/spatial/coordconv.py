"""CoordConv (Liu et al. 2018, arXiv:1807.03247): convolution that sees where it is.

``AddCoords`` appends one channel per spatial axis holding that axis's coordinate, running
linearly from -1 (first row/column) to 1 (last), and optionally a radius channel; a
``CoordConv`` layer is an ordinary (or transposed) convolution applied after it.

Channel order: the input channels, then x (the last axis, width), then y (height), then z (depth
for 3-D inputs), then the radius. An axis of size 1 gets the single coordinate -1
(``torch.linspace(-1, 1, 1)``). The radius is the Euclidean distance from the centre in these
normalised coordinates, ``sqrt(x^2 + y^2 [+ z^2])``; the listing in the paper's appendix subtracts
0.5 from coordinates already rescaled to [-1, 1], which puts the centre off the middle of the
image, so that detail is not followed.

Verified against a float64 per-pixel loop over the formula above (``tests/spatial/test_coordconv.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from posenc.core.base import EncodingModule
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_dtype_matches,
    check_fits,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
)

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def coordinate_channels(
    spatial: tuple[int, ...],
    *,
    with_r: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The coordinate channels for a grid of shape ``spatial`` (1 to 3 axes).

    Returns ``(len(spatial) [+ 1], *spatial)``: x (last axis) first, then y, then z, then the radius.
    """
    if isinstance(spatial, (str, bytes)) or not isinstance(spatial, Sequence) or not 1 <= len(spatial) <= 3:
        raise ValueError(f"`spatial` must be a sequence of 1, 2 or 3 axis sizes, got {spatial!r}")
    for i, size in enumerate(spatial):
        check_int(f"spatial[{i}]", size, minimum=0)
    check_float_dtype("dtype", dtype)  # integer coordinates would truncate -0.5 .. 0.5 to 0
    check_bool("with_r", with_r)
    # formed in float64: (axes [+ radius], *spatial) of them, refused before the allocator sees them
    check_fits("spatial", tuple(spatial), (len(spatial) + bool(with_r), *spatial), torch.float64, device)
    axes = [torch.linspace(-1.0, 1.0, size, device=device, dtype=torch.float64) for size in spatial]
    # meshgrid over (..., y, x); reversed so that channel 0 is x, the last axis
    grids = list(torch.meshgrid(*axes, indexing="ij"))[::-1]
    if with_r:
        grids.append(torch.stack(grids).square().sum(0).sqrt())
    return torch.stack(grids).to(dtype)


def add_coords(x: torch.Tensor, *, with_r: bool = False) -> torch.Tensor:
    """Append coordinate channels: ``(b, c, *spatial)`` -> ``(b, c + len(spatial) [+ 1], *spatial)``.

    ``spatial`` has 1, 2 or 3 axes; channel order x (last axis) first, then y, then further axes,
    then the radius when ``with_r``. The coordinates take ``x``'s dtype and device.
    """
    check_float_tensor("x", x, ndim=(3, 4, 5))
    coords = coordinate_channels(tuple(x.shape[2:]), with_r=check_bool("with_r", with_r), device=x.device, dtype=x.dtype)
    # (k, *spatial) -> (b, k, *spatial)
    return torch.cat([x, coords.unsqueeze(0).expand(x.shape[0], *coords.shape)], dim=1)


class AddCoords(nn.Module):
    """Module form of :func:`add_coords` for inputs with ``spatial_dims`` spatial axes."""

    def __init__(self, spatial_dims: int = 2, *, with_r: bool = False) -> None:
        super().__init__()
        self.spatial_dims = check_int("spatial_dims", spatial_dims, minimum=1, maximum=3)
        self.with_r = check_bool("with_r", with_r)

    @property
    def extra_channels(self) -> int:
        """Channels appended to the input."""
        return self.spatial_dims + int(self.with_r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(b, c, *spatial)`` -> ``(b, c + extra_channels, *spatial)``."""
        check_float_tensor("x", x, ndim=self.spatial_dims + 2)
        return add_coords(x, with_r=self.with_r)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, with_r={self.with_r}"


@register(
    "coordconv",
    paper="Liu et al. 2018, arXiv:1807.03247",
    summary="Convolution over the input with x/y(/z, radius) coordinate channels in [-1, 1] appended.",
)
class CoordConv(EncodingModule):
    """``AddCoords`` followed by a convolution: ``(b, in_channels, *s) -> (b, out_channels, *s')``.

    Args:
        in_channels: channels of the input (the coordinates are added on top).
        out_channels, kernel_size: of the convolution.
        spatial_dims: 1, 2 or 3 spatial axes.
        with_r: also append the radius channel.
        **conv_kwargs: stride, padding, dilation, groups, bias... of the ``nn.ConvNd``.
    """

    model_arguments = ("in_channels", "out_channels", "kernel_size")
    #: How the reference CNN uses it: as its first convolution.
    cnn_role: ClassVar[str] = "stem"
    _transposed: ClassVar[bool] = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...] = 3,
        *,
        spatial_dims: int = 2,
        with_r: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **conv_kwargs: Any,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        if isinstance(kernel_size, tuple):
            if len(kernel_size) != spatial_dims:
                raise ValueError(f"`kernel_size` must be an int or {spatial_dims} ints, got {kernel_size!r}")
            for i, size in enumerate(kernel_size):
                check_positive_int(f"kernel_size[{i}]", size)
        else:
            check_positive_int("kernel_size", kernel_size)
        self.add_coords = AddCoords(spatial_dims, with_r=with_r)
        kernel = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * spatial_dims
        weights = (in_channels + self.add_coords.extra_channels) * out_channels * math.prod(kernel)
        sizes = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel}
        check_layers_fit(sizes, weights + out_channels, dtype, device)
        conv = (_CONV_T if self._transposed else _CONV)[spatial_dims]
        self.conv = conv(
            in_channels + self.add_coords.extra_channels,
            out_channels,
            kernel_size,
            device=device,
            dtype=dtype,
            **conv_kwargs,
        )
        # torch accepts these when built and fails only at the first call
        for name, minimum in (("stride", 1), ("dilation", 1), ("padding", 0), ("output_padding", 0)):
            value = getattr(self.conv, name, None)
            if isinstance(value, tuple) and any(v < minimum for v in value):
                raise ValueError(f"`{name}` must be >= {minimum} on every axis, got {conv_kwargs.get(name)!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(b, in_channels, *spatial)`` -> ``(b, out_channels, *spatial')``."""
        check_dtype_matches("x", check_float_tensor("x", x, ndim=self.add_coords.spatial_dims + 2), self)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}")
        if x.numel() == 0:
            return self._empty_output(x)
        if not self._transposed:
            self._check_reach(x)
        return self.conv(self.add_coords(x))

    def _check_reach(self, x: torch.Tensor) -> None:
        """Each padded spatial axis of ``x`` must hold the kernel's reach (torch's error names no argument)."""
        padding = self.conv.padding
        if padding == "same":
            return
        padding = (0,) * len(self.conv.kernel_size) if padding == "valid" else padding
        for axis, (s, p, d, k) in enumerate(zip(x.shape[2:], padding, self.conv.dilation, self.conv.kernel_size)):
            if s + 2 * p < d * (k - 1) + 1:
                raise ValueError(
                    f"`x` must be at least {d * (k - 1) + 1 - 2 * p} wide along spatial axis {axis} for kernel_size={k} "
                    f"(padding {p}, dilation {d}), got shape {tuple(x.shape)}"
                )

    def _empty_output(self, x: torch.Tensor) -> torch.Tensor:
        """The empty result for an input with no pixels (or no batch), which convolutions reject: the
        sizes of the non-empty axes come from the convolution run once on a one-image probe whose empty
        axes are as wide as the kernel reaches."""
        reach = [d * (k - 1) + 1 for d, k in zip(self.conv.dilation, self.conv.kernel_size)]
        spatial = x.shape[2:]
        with torch.no_grad():
            probe = x.new_zeros(1, x.shape[1], *[s or r for s, r in zip(spatial, reach)])
            sizes = self.conv(self.add_coords(probe)).shape[2:]
        return x.new_zeros(x.shape[0], self.conv.out_channels, *[o if s else 0 for s, o in zip(spatial, sizes)])


class CoordConvTranspose(CoordConv):
    """``AddCoords`` followed by a transposed convolution (the paper's decoder variant)."""

    _transposed = True
