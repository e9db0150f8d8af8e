"""Sinusoidal absolute position encoding (Vaswani et al. 2017, arXiv:1706.03762, section 3.5).

    PE(p, 2i) = sin(p / base^(2i/d)),  PE(p, 2i+1) = cos(p / base^(2i/d))

``interleaved=True`` is the paper's layout (sin, cos alternating); ``interleaved=False`` puts all
sines first, then all cosines (most vision code; the layout of tensor2tensor's ``get_timing_signal_1d``
and fairseq's ``SinusoidalPositionalEmbedding`` too, but not their values: they space the
frequencies as ``base^(-i/(d/2 - 1))``, so that the lowest is exactly ``1/base``; that is
:func:`posenc.functional.timestep_embedding` ``(p, d, max_period=base)``, DDPM's shift 1, tested
against their formula). Positions may be integer
or fractional and of any magnitude: angles are formed in float64 (see ``posenc.core.frequencies``).
Verified against a float64 transcription of the formula above (``tests/input/test_sinusoidal.py``).
"""

from __future__ import annotations

from typing import Literal

import torch

from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.frequencies import check_max_position, inverse_frequencies, reduced_angles
from posenc.core.positions import Positions, positions_or_randomized, resolve_positions, table_window
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_choice,
    check_even,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_positions,
    check_table_fits,
)
from posenc.input.combine import combine_with_input


def sinusoidal(
    positions: torch.Tensor | int,
    dim: int,
    *,
    base: float = 10000.0,
    interleaved: bool = True,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sinusoidal table for ``positions``.

    positions: ``(*p,)`` integer or float tensor, or an int ``n`` meaning ``0 .. n - 1``.
    randomize_positions: with an int ``n``, ``L`` takes instead ``n`` ordered random positions from
    ``[0, L)`` (:func:`~posenc.core.positions.randomized_positions`, drawn from ``generator``).
    Returns ``(*p, dim)``: float64 when ``positions`` is float64, else float32.
    """
    check_even("dim", dim)
    check_float("base", base, positive=True)
    check_bool("interleaved", interleaved)
    if isinstance(positions, int) and not isinstance(positions, bool):
        if positions < 0:
            raise ValueError(f"`positions` as a length must be >= 0, got {positions}")
        check_table_fits({"positions": positions, "dim": dim}, (positions, dim), torch.float32, None)
        drawn = positions_or_randomized(None, randomize_positions, n=positions, generator=generator)
        positions = torch.arange(positions) if drawn is None else drawn[0]
    elif randomize_positions is None and generator is not None:
        raise ValueError(
            "`generator` draws randomized positions: pass `randomize_positions` and `positions` as an int n "
            f"with it, or leave it None; got a {type(positions).__name__} of positions"
        )
    elif randomize_positions is not None:
        raise ValueError(
            "`randomize_positions` draws the positions of a length: pass `positions` as an int n with it, "
            f"got a {type(positions).__name__}"
        )
    positions = check_positions("positions", positions)
    check_fits("dim", dim, (*positions.shape, dim), torch.float64, positions.device)
    out_dtype = arithmetic_dtype(positions.dtype)
    theta = reduced_angles(positions, inverse_frequencies(dim, base, device=positions.device), dtype=out_dtype)
    if (theta.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        sin, cos = theta.sin(), theta.cos()
        # (*p, dim/2, 2) -> (*p, dim) for sin/cos pairs; (*p, 2, dim/2) -> (*p, dim) for halves
        table = torch.stack((sin, cos), dim=-1) if interleaved else torch.stack((sin, cos), dim=-2)
        return table.flatten(-2)
    # without autograd, sin and cos are written straight into their places in the table
    table = theta.new_empty(*theta.shape[:-1], dim)
    pairs = table.unflatten(-1, (dim // 2, 2)) if interleaved else table.unflatten(-1, (2, dim // 2))
    torch.sin(theta, out=pairs[..., 0] if interleaved else pairs[..., 0, :])
    torch.cos(theta, out=pairs[..., 1] if interleaved else pairs[..., 1, :])
    return table


@register(
    "sinusoidal",
    paper="Vaswani et al. 2017, arXiv:1706.03762",
    summary="Fixed sin/cos of geometrically spaced frequencies, added to (or concatenated with) token embeddings.",
)
class SinusoidalPositionEncoding(DerivedTablesMixin, PositionEncoding):
    """Sinusoidal absolute encoding with a table cached for implicit positions.

    Args:
        dim: width of the encoding (the model width when ``combine="add"``); even.
        base: the wavelength base (10000 in the paper).
        interleaved: the paper's sin/cos alternation (True) or sines then cosines (False).
        combine: ``"add"`` to the token embeddings, or ``"concat"`` after them.
        scale: multiplies the encoding (1.0 in the paper).
        cache_len: positions cached up front.

    Cache policy: a float32 window of the table, ``cache_len`` rows from the first implicit position
    in use; moved (and grown to a power of two when more tokens arrive at once) when positions fall
    outside it, so an offset of 10^7 costs what its tokens cost. Explicit positions are computed inline.
    A float64 model (float64 ``x``) gets the encoding computed inline in float64.
    """

    model_arguments = ("dim",)
    hooks = frozenset({"input"})

    def __init__(
        self,
        dim: int,
        *,
        base: float = 10000.0,
        interleaved: bool = True,
        combine: Literal["add", "concat"] = "add",
        scale: float = 1.0,
        cache_len: int = 256,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_even("dim", dim)
        self.base = check_float("base", base, positive=True)
        self.interleaved = check_bool("interleaved", interleaved)
        self.combine = check_choice("combine", combine, ("add", "concat"))
        self.scale = check_float("scale", scale)
        self.concat_dim = dim if combine == "concat" else 0
        self._cache_len = check_int("cache_len", cache_len, minimum=1)
        check_table_fits({"cache_len": cache_len}, (cache_len, dim), torch.float32, device)
        self._cache_start = 0
        self.register_buffer("table", torch.empty(0, dim, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        """(Re)build the cached window of the table: rows ``start .. start + cache_len - 1``."""
        positions = torch.arange(self._cache_start, self._cache_start + self._cache_len, device=device)
        self.table = sinusoidal(positions, self.dim, base=self.base, interleaved=self.interleaved)

    def encode(self, positions: Positions) -> torch.Tensor:
        """``(b | 1, n, dim)`` float32 encodings of ``positions``, from the cached window when implicit."""
        if positions.is_implicit:
            check_max_position("offset", positions.end - 1)
            first, last = positions.offset - self._cache_start, positions.end - self._cache_start
            if (first < 0 or last > self.table.shape[0]) and not torch.compiler.is_compiling():
                self._cache_start, self._cache_len = table_window(positions, self._cache_len)
                self.rebuild_tables(self.table.device)
                first, last = 0, positions.n
            if first >= 0 and last <= self.table.shape[0]:
                return self.table[first:last].unsqueeze(0) * self.scale
        pos = positions.tensor(self.table.device)
        return sinusoidal(pos, self.dim, base=self.base, interleaved=self.interleaved).float() * self.scale

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """x: ``(b, n, d)`` -> ``(b, n, d)`` (add) or ``(b, n, d + dim)`` (concat)."""
        check_float_tensor("x", x, ndim=3)
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        return self.encode_input(x, positions=Positions(x.shape[-2], offset, None if positions is None else pos))

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        if x.dtype == torch.float64:  # a float64 model: computed in float64, not read from the float32 table
            pos = positions.tensor(self.table.device).double()
            encoding = sinusoidal(pos, self.dim, base=self.base, interleaved=self.interleaved) * self.scale
            return combine_with_input(x, encoding, self.combine, name="x")
        return combine_with_input(x, self.encode(positions), self.combine, name="x")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, interleaved={self.interleaved}, combine={self.combine!r}, scale={self.scale}"
