"""The addition-theorem property of an absolute encoding (survey 1.3).

Vaswani et al. (arXiv:1706.03762, section 3.5) chose sinusoids because for every offset ``k`` there is
one linear map ``M_k`` with ``PE(p + k) = M_k PE(p)`` for all ``p``: by the angle-addition theorem it
rotates each (sin, cos) pair by ``k`` times its frequency. :func:`fit_shift_map` fits ``M_k`` by least
squares over all positions of any table and reports how well it fits and whether it is orthogonal
and a block rotation. For a learned table no such map exists: the residual is large.

Over a short run of consecutive positions the slowest sinusoids barely turn, their columns are
numerically dependent (condition numbers near 1e17 for d = 32, n = 128) and ``M_k`` is not
identifiable there: every map fits. :func:`fit_shift_map_at` therefore fits on pairs
``(PE(p), PE(p + k))`` at positions ``p`` spread over a wide range, for encodings that are functions
of the position; ``condition_number`` in the result says whether the fit was well posed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from posenc.core.validation import check_finite, check_float_tensor, check_int

#: Tolerance below which an error counts as zero for the boolean verdicts.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ShiftMapFit:
    """The least-squares ``M_k`` of one table and one shift, and how far it is from a rotation."""

    shift: int
    matrix: torch.Tensor  #: ``(d, d)`` float64, ``PE(p + k) ~= matrix @ PE(p)``
    residual: float  #: ``||Y - X M^T||_F / ||Y||_F`` over all pairs ``(p, p + k)``
    orthogonality_error: float  #: ``max |M^T M - I|``
    block_error: float  #: share of ``||M||_F`` outside 2x2 diagonal blocks, best pair layout (nan for odd d)
    layout: str | None  #: ``"interleaved"`` (pairs 2i, 2i+1) or ``"halves"`` (pairs i, i + d/2)
    condition_number: float  #: of the source rows; above ~1e8 the map is not identifiable

    @property
    def well_posed(self) -> bool:
        return self.condition_number < 1e8

    @property
    def is_orthogonal(self) -> bool:
        return self.orthogonality_error < TOLERANCE

    @property
    def is_block_rotation(self) -> bool:
        """Orthogonal, block diagonal in 2x2 blocks, each block a rotation (determinant +1)."""
        if not (self.is_orthogonal and self.block_error < TOLERANCE and self.layout is not None):
            return False
        blocks = _pair_blocks(self.matrix, self.layout)
        return bool((torch.linalg.det(blocks) > 0).all())

    def as_dict(self) -> dict[str, float | int | str | bool | None]:
        return {
            "shift": self.shift,
            "residual": self.residual,
            "orthogonality_error": self.orthogonality_error,
            "block_error": self.block_error,
            "layout": self.layout,
            "is_orthogonal": self.is_orthogonal,
            "is_block_rotation": self.is_block_rotation,
            "condition_number": self.condition_number,
            "well_posed": self.well_posed,
        }


def _pair_order(d: int, layout: str) -> torch.Tensor:
    if layout == "interleaved":
        return torch.arange(d)
    half = d // 2
    # (i, i + d/2) next to each other: 0, d/2, 1, d/2 + 1, ...
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).flatten()


def _pair_blocks(matrix: torch.Tensor, layout: str) -> torch.Tensor:
    """The ``(d/2, 2, 2)`` diagonal blocks of ``matrix`` in the pair order of ``layout``."""
    order = _pair_order(matrix.shape[0], layout)
    m = matrix[order][:, order]
    idx = torch.arange(0, m.shape[0], 2)
    rows = torch.stack((idx, idx + 1), dim=1)
    return m[rows[:, :, None], rows[:, None, :]]


def _block_error(matrix: torch.Tensor, layout: str) -> float:
    d = matrix.shape[0]
    order = _pair_order(d, layout)
    m = matrix[order][:, order]
    blocks = torch.arange(d) // 2
    off = m.masked_fill(blocks[:, None] == blocks[None, :], 0.0)
    return (off.norm() / m.norm().clamp_min(1e-300)).item()


def fit_linear_map(source: torch.Tensor, target: torch.Tensor, *, shift: int = 0) -> ShiftMapFit:
    """Fit ``M`` with ``target[r] ~= M @ source[r]`` for every row ``r`` by least squares (float64).

    source, target: ``(N, d)`` with ``N > d`` (otherwise any pair of tables fits exactly). ``shift``
    is only recorded in the result.
    """
    check_finite("source", check_float_tensor("source", source, ndim=2))
    check_finite("target", check_float_tensor("target", target, ndim=2))
    if source.shape != target.shape:
        raise ValueError(f"`source` and `target` must have one shape, got {tuple(source.shape)} and {tuple(target.shape)}")
    rows, d = source.shape
    if rows <= d:
        raise ValueError(f"`source` needs more rows than columns for an over-determined fit, got shape {(rows, d)}")
    x = source.detach().to(device="cpu", dtype=torch.float64)
    y = target.detach().to(device="cpu", dtype=torch.float64)
    # y ~= x @ M^T; gelsd (SVD) gives the minimum-norm solution when columns are nearly dependent
    m_t = torch.linalg.lstsq(x, y, driver="gelsd").solution
    matrix = m_t.T.contiguous()
    residual = ((y - x @ m_t).norm() / y.norm().clamp_min(1e-300)).item()
    ortho = (matrix.T @ matrix - torch.eye(d, dtype=torch.float64)).abs().max().item()
    singular = torch.linalg.svdvals(x)
    condition = (singular[0] / singular[-1]).item() if singular[-1] > 0 else math.inf
    if d % 2:
        block, layout = math.nan, None
    else:
        errors = {layout: _block_error(matrix, layout) for layout in ("interleaved", "halves")}
        layout = min(errors, key=errors.get)
        block = errors[layout]
    return ShiftMapFit(shift, matrix, residual, ortho, block, layout, condition)


def fit_shift_map(table: torch.Tensor, shift: int = 1) -> ShiftMapFit:
    """Fit ``M_k`` with ``table[p + k] ~= M_k @ table[p]`` for every ``p`` by least squares.

    table: ``(n, d)`` rows ``PE(0) .. PE(n - 1)`` of any absolute encoding (a learned table, say);
    ``n - shift`` must exceed ``d``, otherwise any table fits exactly and the test says nothing.
    """
    check_finite("table", check_float_tensor("table", table, ndim=2))
    n, d = table.shape
    check_int("shift", shift, minimum=1)
    if n - shift <= d:
        raise ValueError(
            f"`table` needs more than d + shift = {d + shift} rows for the fit to be over-determined, got {n} "
            f"(shift={shift}, d={d})"
        )
    return fit_linear_map(table[:-shift], table[shift:], shift=shift)


def fit_shift_map_at(
    encode: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor, shift: int = 1
) -> ShiftMapFit:
    """Fit ``M_k`` from ``encode(positions)`` to ``encode(positions + shift)``.

    encode: positions ``(N,)`` -> encodings ``(N, d)`` (any absolute encoding that is a function of
    the position); positions: ``(N,)`` with ``N > d``, best spread over a wide range.
    """
    check_int("shift", shift, minimum=1)
    if not isinstance(positions, torch.Tensor) or positions.ndim != 1:
        raise ValueError(f"`positions` must be a 1-D tensor, got {positions!r:.80}")
    check_finite("positions", positions)
    source, target = encode(positions), encode(positions + shift)
    for table in (source, target):  # checked here: fit_linear_map would name its own `source` and `target`
        if not isinstance(table, torch.Tensor):
            raise TypeError(f"`encode` must return a torch.Tensor, got {type(table).__name__}")
        if table.ndim != 2 or table.shape[0] != len(positions) or table.shape != source.shape:
            raise ValueError(
                f"`encode` must return one (N, d) tensor per call for N = {len(positions)} positions, "
                f"got {tuple(source.shape)} and {tuple(target.shape)}"
            )
        if table.is_floating_point() and not bool(torch.isfinite(table).all()):
            raise ValueError("`encode` returned NaN or inf")
    if len(positions) <= source.shape[1]:
        raise ValueError(
            f"`positions` needs more entries than the encodings' width d = {source.shape[1]} for the fit to be "
            f"over-determined, got {len(positions)}"
        )
    return fit_linear_map(source, target, shift=shift)


def shift_map_residuals(table: torch.Tensor, shifts: list[int] | range) -> list[ShiftMapFit]:
    """:func:`fit_shift_map` for each shift in ``shifts`` (a residual-vs-offset curve)."""
    return [fit_shift_map(table, k) for k in shifts]
