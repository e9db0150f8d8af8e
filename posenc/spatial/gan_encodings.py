"""Explicit spatial encodings as a generator's input (Xu et al. 2020, arXiv:2012.05217).

Xu et al. show that a GAN generator's zero padding and StyleGAN's learned constant input act as an
implicit, learned position encoding, and replace the constant with explicit ones:

* the **Cartesian spatial grid** (CSG): two channels, x then y, running linearly from -1 to 1
  (the CoordConv channels of :mod:`posenc.spatial.coordconv`);
* the **2-D sinusoidal encoding** (SPE): half the channels encode x, half encode y, each with the
  Transformer sinusoid (sines then cosines). Positions are integer offsets from the grid centre,
  ``i - s // 2``, so a larger grid extends a smaller one outwards with the same values at the
  centre;
* **multi-scale** training (MS-PIE): the same explicit encoding evaluated at several grid sizes
  (for instance 4x4, 5x5, 6x6 heads for 256, 320, 384 pixel images), one size per training step,
  so that one generator synthesises at several resolutions. ``gan_multiscale`` holds the list of
  sizes, caches their tables and samples one.

Every input module here has the constant input's interface: ``forward(batch, *, size=None)`` ->
``(b, out_channels, h, w)``, so :class:`posenc.spatial.constant_input.StyleGenerator` takes any of
them. Verified against float64 per-pixel loops of the formulas above
(``tests/spatial/test_gan_encodings.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from posenc.core.base import DerivedTablesMixin, EncodingModule
from posenc.core.registry import register
from posenc.core.validation import check_batch, check_choice, check_fits, check_float, check_int
from posenc.spatial.coordconv import coordinate_channels
from posenc.spatial.sinusoidal_nd import _check_dim, sinusoidal_coords


def _check_size(name: str, size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"`{name}` must be an int or an (h, w) pair of positive ints, got {size!r}")
    return tuple(check_int(f"{name}[{i}]", s, minimum=1) for i, s in enumerate(size))  # type: ignore[return-value]


def cartesian_grid(size: tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(2, h, w)`` float32: x (along the width) then y, each from -1 to 1."""
    size = _check_size("size", size)
    check_fits("size", size, (2, *size), torch.float32, device)
    return coordinate_channels(size, device=device)


def sinusoidal_grid(
    size: tuple[int, int], channels: int, *, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(channels, h, w)`` float32: ``channels/2`` for x then ``channels/2`` for y, centred positions."""
    h, w = _check_size("size", size)
    _check_dim(channels, 2, "channels")
    check_float("base", base, positive=True)
    # the (h, w, 2) float64 coordinates, then as many float64 angles per pixel as channels
    check_fits("size", size, (h, w, max(channels, 2)), torch.float64, device)
    ys = torch.arange(h, device=device, dtype=torch.float64) - h // 2
    xs = torch.arange(w, device=device, dtype=torch.float64) - w // 2
    # (h, w, 2) coordinates in (x, y) order
    coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return sinusoidal_coords(coords, channels, base=base).permute(2, 0, 1).float()


class _GridInput(DerivedTablesMixin, nn.Module):
    """A fixed encoding table broadcast over the batch; recomputed for sizes other than the cached one."""

    out_channels: int

    def __init__(self, size, device) -> None:
        super().__init__()
        self.size = _check_size("size", size)
        self.register_buffer("table", torch.empty(0, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def table_for(self, size: tuple[int, int], device) -> torch.Tensor:
        raise NotImplementedError

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        self.table = self.table_for(self.size, device)

    def forward(self, batch: int | torch.Tensor, *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """``(b, out_channels, h, w)``; ``batch`` an int or a tensor whose first axis is the batch."""
        b = check_batch("batch", batch)
        size = self.size if size is None else _check_size("size", size)
        table = self.table if size == self.size else self.table_for(size, self.table.device)
        return table.unsqueeze(0).expand(b, -1, -1, -1)


class CartesianGridInput(_GridInput):
    """Xu et al.'s Cartesian spatial grid (CSG) as a generator input: 2 channels."""

    out_channels = 2

    def __init__(self, size: int | tuple[int, int] = 4, *, device: torch.device | str | None = None) -> None:
        super().__init__(size, device)

    def table_for(self, size, device):
        return cartesian_grid(size, device=device)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class SinusoidalGridInput(_GridInput):
    """Xu et al.'s 2-D sinusoidal encoding (SPE) as a generator input: ``channels`` channels (divisible by 4)."""

    def __init__(
        self,
        channels: int,
        size: int | tuple[int, int] = 4,
        *,
        base: float = 10000.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.out_channels = _check_dim(channels, 2, "channels")
        self.base = check_float("base", base, positive=True)
        super().__init__(size, device)

    def table_for(self, size, device):
        return sinusoidal_grid(size, self.out_channels, base=self.base, device=device)

    def extra_repr(self) -> str:
        return f"channels={self.out_channels}, size={self.size}, base={self.base}"


@register(
    "gan_multiscale",
    paper="Xu et al. 2020, arXiv:2012.05217",
    summary="Explicit Cartesian or 2-D sinusoidal generator input at several grid sizes (MS-PIE), replacing the constant.",
)
class MultiScalePositionalInput(EncodingModule):
    """One explicit encoding at several grid sizes, for multi-scale generator training.

    Args:
        channels: channels of the sinusoidal encoding (divisible by 4); ignored (2) for ``"cartesian"``.
        kind: ``"sinusoidal"`` (SPE) or ``"cartesian"`` (CSG).
        sizes: the training grid sizes; the first is the default.
        base: wavelength base of the sinusoidal encoding.
    """

    def __init__(
        self,
        channels: int = 32,
        *,
        kind: Literal["sinusoidal", "cartesian"] = "sinusoidal",
        sizes: Sequence[int | tuple[int, int]] = ((4, 4), (6, 6), (8, 8)),
        base: float = 10000.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, ("sinusoidal", "cartesian"))
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
            raise ValueError(f"`sizes` must be a non-empty sequence of grid sizes, got {sizes!r}")
        self.sizes = [_check_size(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        if kind == "sinusoidal":
            self.scales = nn.ModuleList(SinusoidalGridInput(channels, s, base=base, device=device) for s in self.sizes)
        else:
            self.scales = nn.ModuleList(CartesianGridInput(s, device=device) for s in self.sizes)
        self.out_channels = self.scales[0].out_channels

    def sample_size(self, generator: torch.Generator | None = None) -> tuple[int, int]:
        """One of ``sizes``, uniformly at random (the MS-PIE training schedule)."""
        i = int(torch.randint(len(self.sizes), (1,), generator=generator))
        return self.sizes[i]

    def forward(self, batch: int | torch.Tensor, *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """``(b, out_channels, h, w)`` at ``size`` (default: the first of ``sizes``; any size works)."""
        size = self.sizes[0] if size is None else _check_size("size", size)
        scale = self.sizes.index(size) if size in self.sizes else 0
        return self.scales[scale](batch, size=size)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, out_channels={self.out_channels}, sizes={self.sizes}"
