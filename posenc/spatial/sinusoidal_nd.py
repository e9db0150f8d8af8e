"""2-D and N-D sinusoidal encodings: the Transformer sinusoid (Vaswani et al. 2017, arXiv:1706.03762)
per axis, with the channels split evenly across the axes.

For a grid of shape ``(s_0, ..., s_{k-1})`` and width ``dim``, axis ``a`` gets the channels
``[a * dim/k, (a + 1) * dim/k)`` holding ``sinusoidal(p_a, dim/k, interleaved=False)``: sines of
``p_a * base^(-2i/(dim/k))`` then cosines. This is the layout of MAE (He et al. 2021,
arXiv:2111.06377) for two axes, except that the axes come in the order given (``(h, w)``: rows
first), where MAE puts the width coordinate first. timm's ``build_sincos2d_pos_embed`` has the same
frequencies and values but groups all sines of both axes before all cosines (a permutation of these
channels). The same encoding is available at arbitrary, fractional coordinates
(:func:`sinusoidal_coords`), for video (``(t, h, w)``), volumes, or resampled grids.

``sincos_2d`` adds (or concatenates) the 2-D table to a ``(b, c, h, w)`` feature map, or to the
patch tokens of a vision Transformer (prefix tokens such as the class token get zeros, as in MAE).
Float64 inputs get a float64 encoding formed from float64 angles; other dtypes get the cached
float32 table, cast.

Verified against a float64 loop over the per-axis formula (``tests/spatial/test_sinusoidal_nd.py``)
against diffusers' ``get_2d_sincos_pos_embed_from_grid`` (MAE's, with the width coordinate first) and,
on a machine with timm, against ``build_sincos2d_pos_embed`` up to that channel permutation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch

from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_fits,
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_positions,
    check_positive_int,
    check_table_fits,
)
from posenc.input.sinusoidal import sinusoidal
from posenc.vision.grid import check_grid, token_coords


def _check_dim(dim: int, axes: int, name: str = "dim") -> int:
    check_positive_int(name, dim)
    if dim % (2 * axes):
        raise ValueError(
            f"`{name}` must be divisible by 2 * {axes} (a sin/cos pair of channels per frequency on each of the "
            f"{axes} axes), got {dim}"
        )
    return dim


def sinusoidal_coords(coords: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Encode ``k``-dimensional coordinates: ``(*p, k)`` -> ``(*p, dim)``.

    Each axis gets ``dim // k`` channels, ``sinusoidal(coords[..., a], dim // k, interleaved=False)``,
    axes in the order of the last dimension. Float64 when ``coords`` is float64, else float32.
    """
    check_positions("coords", coords)
    if coords.ndim < 1 or coords.shape[-1] < 1:
        raise ValueError(f"`coords` must have shape (..., k) with k >= 1 axes, got {tuple(coords.shape)}")
    k = coords.shape[-1]
    _check_dim(dim, k)
    check_fits("dim", dim, (*coords.shape[:-1], dim), torch.float64, coords.device)
    return torch.cat(
        [sinusoidal(coords[..., a], dim // k, base=base, interleaved=False) for a in range(k)], dim=-1
    )


def sinusoidal_nd(
    shape: Sequence[int],
    dim: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The sinusoidal table of a grid: ``shape = (s_0, ..., s_{k-1})`` -> ``(*shape, dim)``.

    Axis ``a`` is encoded at the integer positions ``0 .. s_a - 1`` in the channels
    ``[a * dim/k, (a + 1) * dim/k)``; ``dim`` must be divisible by ``2k``.
    """
    if isinstance(shape, int) or not isinstance(shape, Sequence) or len(shape) == 0:
        raise ValueError(f"`shape` must be a non-empty sequence of non-negative ints, got {shape!r}")
    shape = tuple(check_int(f"shape[{i}]", s, minimum=0) for i, s in enumerate(shape))
    _check_dim(dim, len(shape))
    check_float("base", base, positive=True)
    check_float_dtype("dtype", dtype)
    if not torch.compiler.is_compiling():  # traced sizes may be symbolic; eager calls have checked them
        check_table_fits({"shape": shape, "dim": dim}, (*shape, dim), dtype, device)  # names the larger
    per_axis, tables = dim // len(shape), []
    for axis, size in enumerate(shape):
        # one 1-D table per axis, broadcast over the grid: (s_a, per_axis) -> (1, .., s_a, .., 1, per_axis)
        view = [1] * len(shape) + [per_axis]
        view[axis] = size
        positions = torch.arange(size, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.long)
        table = sinusoidal(positions, per_axis, base=base, interleaved=False)
        tables.append(table.view(view).expand(*shape, per_axis))
    return torch.cat(tables, dim=-1).to(dtype)



@register(
    "sincos_2d",
    paper="Vaswani et al. 2017, arXiv:1706.03762 (per axis); He et al. 2021, arXiv:2111.06377 (2-D split)",
    summary="Fixed 2-D sin/cos table, half the channels per axis, added to feature maps or patch tokens.",
)
class SinCos2d(DerivedTablesMixin, PositionEncoding):
    """Fixed 2-D sinusoidal encoding for feature maps and patch tokens.

    Args:
        dim: channels of the encoding; divisible by 4.
        grid: ``(h, w)`` patch grid, needed for patch tokens (a vision Transformer fills it in).
        num_prefix_tokens: class/register tokens before the patches; they get a zero encoding.
        base: the wavelength base.
        combine: ``"add"`` to the input (its channels must equal ``dim``) or ``"concat"`` after them.
    """

    model_arguments = ("dim", "grid", "num_prefix_tokens")
    hooks = frozenset({"input"})
    #: How the reference CNN uses it: on the stem's feature map.
    cnn_role: ClassVar[str] = "features"

    def __init__(
        self,
        dim: int,
        *,
        grid: int | tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        base: float = 10000.0,
        combine: Literal["add", "concat"] = "add",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_dim(dim, 2)
        self.grid = None if grid is None else check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.base = check_float("base", base, positive=True)
        self.combine = check_choice("combine", combine, ("add", "concat"))
        self.concat_dim = dim if combine == "concat" else 0
        self.register_buffer("table", torch.empty(0, dim, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    @property
    def concat_channels(self) -> int:
        """Channels appended to a feature map (0 when added)."""
        return self.concat_dim

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        if self.grid is not None:
            # (h, w, dim) -> (h * w, dim): raster order, as the patch tokens
            self.table = sinusoidal_nd(self.grid, self.dim, base=self.base, device=device).flatten(0, 1)

    def encode(self, positions: Positions, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(b | 1, n, dim)`` encodings of the tokens at ``positions`` (zeros for prefix tokens) in
        ``dtype``: float32 (the cached table) or float64 (formed from float64 angles)."""
        if self.grid is None:
            raise ValueError("`grid` must be given to encode patch tokens (the (h, w) patch grid)")
        device = self.table.device
        if positions.is_implicit and dtype != torch.float64:
            token_coords(positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens)  # range check
            full = torch.cat([self.table.new_zeros(self.num_prefix_tokens, self.dim), self.table])
            return full[positions.offset : positions.end].unsqueeze(0)
        coords, is_patch = token_coords(positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens, device=device)
        enc = sinusoidal_coords(coords.double(), self.dim, base=self.base).to(dtype)
        return enc * is_patch.unsqueeze(-1)

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        """x: ``(b, n, d)`` patch tokens -> ``(b, n, d)`` (add) or ``(b, n, d + dim)`` (concat)."""
        check_float_tensor("x", x, ndim=3)
        enc = self.encode(positions, dtype=arithmetic_dtype(x.dtype)).to(x.dtype)
        if self.combine == "concat":
            return torch.cat([x, enc.expand(x.shape[0], -1, -1)], dim=-1)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim} to add the encoding, got {x.shape[-1]}")
        return x + enc

    def feature_map_encoding(self, h: int, w: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(dim, h, w)`` table for a feature map of that size, float32 (cached) or float64."""
        if self.grid == (h, w) and self.table.numel() and dtype != torch.float64:
            table = self.table.view(h, w, self.dim)
        else:
            table = sinusoidal_nd((h, w), self.dim, base=self.base, device=self.table.device, dtype=dtype)
        return table.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, c, h, w)`` feature map, or ``(b, n, d)`` patch tokens (``positions``: token indices)."""
        check_float_tensor("x", x, ndim=(3, 4))
        if x.ndim == 3:
            n = x.shape[1]
            explicit = None if positions is None else resolve_positions(positions, n=n, batch=x.shape[0], device=x.device)
            return self.encode_input(x, positions=Positions(n, explicit=explicit))
        if positions is not None:
            raise ValueError("`positions` applies to patch tokens (b, n, d) only; a feature map is its own grid")
        enc = self.feature_map_encoding(x.shape[-2], x.shape[-1], dtype=arithmetic_dtype(x.dtype)).to(x.dtype)
        if self.combine == "concat":
            return torch.cat([x, enc.expand(x.shape[0], -1, -1, -1)], dim=1)
        if x.shape[1] != self.dim:
            raise ValueError(f"`x` must have dim={self.dim} channels to add the encoding, got shape {tuple(x.shape)}")
        return x + enc

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}, combine={self.combine!r}, "
            f"base={self.base}"
        )
