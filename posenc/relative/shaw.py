"""Relative position representations (Shaw et al. 2018, arXiv:1803.02155).

Two learned tables ``a^K`` and ``a^V`` of ``2k + 1`` vectors are indexed by the clipped offset
``clip(j - i, -k, k)`` between key position ``j`` and query position ``i`` (equations 3-5)::

    e_ij = q_i . (k_j + a^K_ij) / sqrt(d)        z_i = sum_j softmax(e)_ij (v_j + a^V_ij)

``k = 16`` by default (the survey's value). Shaw et al. share the tables across heads
(``tables="shared"``); ``tables="per_head"`` gives each head its own.

Memory and time: the naive form materialises ``a^K_ij`` for every pair, ``(n, m, d)``. Here the
key term is ``q @ a^K^T`` (``(n, 2k + 1)``) spread over the pairs by offset, and the value term sums
the attention weights of each offset into ``2k + 1`` buckets before one product with ``a^V``. With
implicit positions the offset is constant along each diagonal of the ``(n, m)`` grid, so the spread
and the sums run along diagonals (:func:`expand_offsets`, :func:`reduce_offsets`) instead of
through an ``(n, m)`` index. The attention itself runs on the blocked kernel of
:mod:`posenc.attention.blocked`, which takes both terms one block of query rows at a time
(:meth:`ShawRelativePosition.block_bias`, :meth:`ShawRelativePosition.block_value`), each with its
own block backward; there the key term is added less each row's row-0 score and the value term
reads the weight on row 0 as 1 less the others, so only the band of ``2k + 1`` diagonals and the
entries clipped to row ``2k`` are touched (:func:`shaw_key_block`), and under a causal mask only the
visible half of the band, read and written as a strided view along its diagonals (:class:`CausalBand`);
FlexAttention takes the key term as a ``score_mod`` reading the ``(n, 2k + 1)`` scores. Verified against the naive ``(n, m, d)``
transcription of equations 3-5 in float64, with gradients by ``gradcheck``
(tests/relative/test_shaw.py, which also measures the peak memory at n = 2048).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from posenc.bias.relative import position_tensors, relative_positions
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.tables import building_tables
from posenc.core.terms import BlockTerm, ScoreMod, position_gap
from posenc.core.transforms import under_transform
from posenc.core.validation import (
    check_bool,
    check_choice,
    check_dtype_matches,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_same_device,
    check_table_fits,
)
from posenc.relative.rel_shift import skew

#: Query rows processed at once by inference and by the per-pair bucket sums (bounds their temporaries).
ROW_BLOCK = 128


def clipped_offsets(rel: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Table indices ``clip(rel, -k, k) + k`` (int64) for integer-valued offsets ``rel`` (any shape)."""
    if rel.is_floating_point():
        if not torch.equal(rel, rel.round()):
            raise ValueError("Shaw et al.'s tables are indexed by integer offsets: `positions` must be integer-valued")
        rel = rel.round()
    index = rel.long().clamp(-max_distance, max_distance)  # a new tensor: shifted in place
    return index.add_(max_distance)


def _table_for_heads(table: torch.Tensor) -> torch.Tensor:
    # (r, d) -> (1, r, d); (h, r, d) stays: broadcast against (b, h, rows, d)
    return table.unsqueeze(0) if table.ndim == 2 else table


def key_offset_scores(q: torch.Tensor, rel_k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``q_i . a^K[index_ij]``: q ``(b, h, n, d)``, rel_k ``(r, d)`` or ``(h, r, d)``, index ``(b | 1, n, m)``
    -> ``(b, h, n, m)`` (unscaled)."""
    # (b, h, n, d) @ (h | 1, d, r) -> (b, h, n, r): one score per query and offset
    per_offset = q @ _table_for_heads(rel_k).to(q.dtype).transpose(-1, -2)
    b, h, n, _ = per_offset.shape
    return per_offset.gather(-1, index.unsqueeze(1).expand(b, h, n, index.shape[-1]))


def value_offset_sums(weights: torch.Tensor, rel_v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``sum_j w_ij a^V[index_ij]``: weights ``(b, h, n, m)``, rel_v ``(r, d)`` or ``(h, r, d)``,
    index ``(b | 1, n, m)`` -> ``(b, h, n, d)``."""
    b, h, n, m = weights.shape
    r = rel_v.shape[-2]
    work = arithmetic_dtype(weights.dtype)
    blocks = []
    for s in range(0, max(n, 1), ROW_BLOCK):  # one (empty) block when there are no queries
        w = weights[..., s : s + ROW_BLOCK, :]
        idx = index[:, s : s + ROW_BLOCK].unsqueeze(1).expand(b, h, w.shape[-2], m)
        # (b, h, rows, m) summed into (b, h, rows, r): the weight each query puts on each offset,
        # accumulated in float32 (a bucket may sum thousands of half-precision weights)
        blocks.append(w.new_zeros(b, h, w.shape[-2], r, dtype=work).scatter_add(-1, idx, w.to(work)))
    buckets = torch.cat(blocks, dim=-2)
    return (buckets @ _table_for_heads(rel_v).to(work)).to(weights.dtype)


class OffsetRuns(NamedTuple):
    """How the clipped offsets of an ``(n, m)`` grid of implicit positions fall along its diagonals.

    Diagonal ``t = j - i + n - 1`` (``0 .. n + m - 2``) holds offset ``j - i + gap``; its table row is
    ``clip(offset, -k, k) + k``. Read in order the rows are ``lo`` times row 0, rows ``first .. last``
    once each, then ``hi`` times row ``2k``.
    """

    n: int
    m: int
    rows: int  #: 2k + 1
    lo: int
    first: int
    last: int
    hi: int

    @staticmethod
    def of(n: int, m: int, gap: int, max_distance: int) -> OffsetRuns:
        k = max_distance
        if k == 0:  # one row for every offset
            return OffsetRuns(n, m, 1, n + m - 1, 1, 0, 0)
        low, high = gap - (n - 1), gap + m - 1  # offsets of the first and last diagonal
        lo = max(0, min(-k, high) - low + 1)  # diagonals clipped to row 0
        hi = max(0, high - max(k, low) + 1)  # ... to row 2k
        first, last = max(low, -k) + k + (lo > 0), min(high, k) + k - (hi > 0)
        return OffsetRuns(n, m, 2 * k + 1, lo, first, last, hi)


def _expand(per_row: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """``(..., n, 2k + 1)`` -> ``(..., n, m)``: entry ``(i, j)`` is column ``clip(j - i + gap) + k`` of row i."""
    lead = per_row.shape[:-1]
    pieces = []
    if runs.lo:
        pieces.append(per_row[..., :1].expand(*lead, runs.lo))
    if runs.last >= runs.first:
        pieces.append(per_row[..., runs.first : runs.last + 1])
    if runs.hi:
        pieces.append(per_row[..., -1:].expand(*lead, runs.hi))
    # (..., n, n + m - 1): the value of every diagonal, the same in every row, then read skewed
    return skew(torch.cat(pieces, dim=-1), runs.n, runs.m)


def _reduce(grid: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """``(..., n, m)`` -> ``(..., n, 2k + 1)``: column c of row i sums the entries of row i whose clipped
    offset is row c (the adjoint of :func:`_expand`).

    Row i's entries ``j < L_i`` (``L_i = lo - (n - 1) + i``) are clipped to row 0, ``j >= H_i``
    (``H_i = m - hi + i``) to row 2k, and the ones between are table rows ``first ..`` one each: two
    staircase sums (a plain sum over the columns every row shares, a masked one over the at most
    ``n - 1`` columns where the rows differ) and one gather of the band; no copy of the grid.
    """
    lead = grid.shape[:-2]
    n, m = runs.n, runs.m
    out = grid.new_zeros(*lead, n, runs.rows)
    if n == 0 or m == 0:
        return out
    rows = torch.arange(n, device=grid.device)
    middle = runs.last - runs.first + 1
    if middle > 0:
        # (n, middle): the column of row i that holds table row first + c
        cols = (runs.lo - (n - 1)) + rows.unsqueeze(1) + torch.arange(middle, device=grid.device)
        inside = (cols >= 0) & (cols < m)
        band = grid.gather(-1, cols.clamp(0, m - 1).expand(*lead, n, middle))
        out[..., runs.first : runs.last + 1] = band.masked_fill(~inside, 0)
    if runs.lo:
        out[..., 0] = _staircase_sum(grid, runs.lo - (n - 1), before=True)
    if runs.hi:
        out[..., -1] = _staircase_sum(grid, m - runs.hi, before=False)
    return out


def _staircase_sum(grid: torch.Tensor, start: int, *, before: bool) -> torch.Tensor:
    """Row i's sum of its columns ``j < start + i`` (``before``) or ``j >= start + i``, ``(..., n, m)``
    -> ``(..., n)``."""
    n, m = grid.shape[-2:]
    first, last = min(max(start, 0), m), min(max(start + n - 1, 0), m)  # the limits of rows 0 and n - 1
    shared = grid[..., :first] if before else grid[..., last:]
    total = shared.sum(-1)
    if last > first:  # columns first .. last - 1: inside some rows' range, outside others'
        rows = torch.arange(n, device=grid.device).unsqueeze(1)
        cols = torch.arange(first, last, device=grid.device)
        keep = cols < start + rows if before else cols >= start + rows
        total = total + torch.where(keep, grid[..., first:last], 0).sum(-1)
    return total


class _ExpandOffsets(torch.autograd.Function):
    @staticmethod
    def forward(ctx, per_row, runs):
        ctx.runs = runs
        return _expand(per_row, runs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return _reduce(grad, ctx.runs), None


class _ReduceOffsets(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, runs):
        ctx.runs = runs
        return _reduce(grid, runs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return _expand(grad.contiguous(), ctx.runs), None


def expand_offsets(per_row: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """Differentiable ``(..., n, 2k + 1) -> (..., n, m)`` spread of per-offset values over the grid of
    implicit positions described by ``runs`` (a strided view; its gradient sums by offset)."""
    if under_transform((per_row,)):  # torch.func / forward-mode AD: the plain operations carry them
        return _expand(per_row, runs)
    return _ExpandOffsets.apply(per_row, runs)


def reduce_offsets(grid: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """Differentiable ``(..., n, m) -> (..., n, 2k + 1)`` sum of each row's entries by clipped offset."""
    if under_transform((grid,)):
        return _reduce(grid, runs)
    return _ReduceOffsets.apply(grid, runs)


def _check_table(name: str, table: torch.Tensor, max_distance: int, d: int, heads: int) -> None:
    check_float_tensor(name, table, ndim=(2, 3))
    r = 2 * max_distance + 1
    if table.shape[-2:] != (r, d) or (table.ndim == 3 and table.shape[0] != heads):
        raise ValueError(
            f"`{name}` must have shape (2*max_distance+1, d) = ({r}, {d}) or (heads, {r}, {d}), "
            f"got {tuple(table.shape)}"
        )


def shaw_key_mod(per_row: torch.Tensor, qpos: torch.Tensor, kpos: torch.Tensor, max_distance: int) -> ScoreMod:
    """Shaw's key term as a score_mod: ``score + per_row[b, h, i, clip(kpos_j - qpos_i) + k]`` for
    per_row ``(b, h, n, 2k + 1)`` (``q_i . a^K_c`` already scaled) and integer positions ``(b, n)``,
    ``(b, m)``."""
    kmax = max_distance

    def fn(score, b, h, q_idx, kv_idx, per_row, qpos, kpos):
        index = (kpos[b, kv_idx] - qpos[b, q_idx]).clamp(-kmax, kmax) + kmax
        return score + per_row[b, h, q_idx, index].to(score.dtype)

    return ScoreMod(fn, (per_row, qpos, kpos))


def shaw_key_mod_implicit(per_row: torch.Tensor, gap: torch.Tensor, max_distance: int) -> ScoreMod:
    """:func:`shaw_key_mod` for implicit positions: key j's offset from query i is ``j - i + gap``
    (``gap`` 0-d); the ``2k + 1`` offsets are declared static, so the compiled kernel builds on CPU.
    ``k`` is read from that static size inside the score_mod (a closed-over int would be traced as a
    symbol under dynamic shapes, which inductor's CPU template cannot lower as a clamp bound)."""
    if per_row.shape[-1] != 2 * max_distance + 1:
        raise ValueError(f"`per_row` must hold 2*max_distance+1 = {2 * max_distance + 1} offsets, got {per_row.shape[-1]}")

    def fn(score, b, h, q_idx, kv_idx, per_row, gap):
        kmax = (per_row.shape[-1] - 1) // 2
        index = (kv_idx - q_idx + gap).clamp(-kmax, kmax) + kmax
        return score + per_row[b, h, q_idx, index].to(score.dtype)

    return ScoreMod(fn, (per_row, gap), static=((3,), ()))


def _offset_scores(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``q_i . table_c``: q ``(b, h, n, d)``, table ``(2k + 1, d)`` or ``(h, 2k + 1, d)`` -> ``(b, h, n, 2k + 1)``.

    A shared table is one ``(b h n, d) @ (d, 2k + 1)`` product (a broadcast batched product, and the
    sum over the batch in its backward, take several times as long on CPU)."""
    if table.ndim == 2:
        return (q.reshape(-1, q.shape[-1]) @ table.transpose(0, 1)).view(*q.shape[:-1], table.shape[0])
    return q @ table.transpose(-1, -2)


def _table_product(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``sum_c x_c table_c``: x ``(b, h, n, 2k + 1)``, table ``(2k + 1, d)`` or ``(h, 2k + 1, d)`` -> ``(b, h, n, d)``."""
    if table.ndim == 2:
        return (x.reshape(-1, x.shape[-1]) @ table).view(*x.shape[:-1], table.shape[-1])
    return x @ table


@functools.lru_cache(maxsize=256)
def _band_columns_cached(runs: OffsetRuns, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    with building_tables():  # cached: an ordinary tensor even when first built under inference mode
        rows = torch.arange(runs.n, device=device).unsqueeze(1)
        cols = (runs.lo - (runs.n - 1)) + rows + torch.arange(runs.last - runs.first + 1, device=device)
        return cols.clamp(0, runs.m - 1), ((cols >= 0) & (cols < runs.m)).to(dtype)


def _band_columns(runs: OffsetRuns, device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, middle)`` columns holding table rows ``first .. last`` in each row (clamped into the grid)
    and whether each lies inside it (1 or 0 in ``dtype``); cached per block shape (the kernel's blocks
    repeat from call to call)."""
    if torch.compiler.is_compiling():
        return _band_columns_cached.__wrapped__(runs, torch.device(device), dtype)
    return _band_columns_cached(runs, torch.device(device), dtype)


def _staircase_add_(grid: torch.Tensor, start: int, values: torch.Tensor) -> None:
    """``grid[..., i, j] += values[..., i]`` for ``j >= start + i``, in place; grid ``(..., n, m)``."""
    n, m = grid.shape[-2:]
    first, last = min(max(start, 0), m), min(max(start + n - 1, 0), m)
    if last < m:
        grid[..., last:] += values.unsqueeze(-1)
    if last > first:
        rows = torch.arange(n, device=grid.device).unsqueeze(1)
        keep = torch.arange(first, last, device=grid.device) >= start + rows
        grid[..., first:last] += torch.where(keep, values.unsqueeze(-1), 0)


def _add_offsets_(grid: torch.Tensor, per_row: torch.Tensor, runs: OffsetRuns) -> None:
    """``grid += expand(per_row) - per_row[..., :1]`` in place: the spread of :func:`_expand` less its
    row-0 value in each row, so only the band of table rows ``first .. last`` and the entries clipped
    to row 2k are touched (the entries clipped to row 0 get nothing)."""
    base = per_row[..., :1]
    if runs.last >= runs.first:
        cols, inside = _band_columns(runs, grid.device, per_row.dtype)
        band = ((per_row[..., runs.first : runs.last + 1] - base) * inside).to(grid.dtype)
        grid.scatter_add_(-1, cols.expand(band.shape), band)  # clamped columns outside the grid add 0
    if runs.hi:
        _staircase_add_(grid, runs.m - runs.hi, (per_row[..., -1] - per_row[..., 0]).to(grid.dtype))


def _reduce_shifted(grid: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """The adjoint of :func:`_add_offsets_`: :func:`_reduce` with column 0 replaced by minus the sum of
    every entry not clipped to row 0, ``(..., n, m)`` -> ``(..., n, 2k + 1)``."""
    out = grid.new_zeros(*grid.shape[:-2], runs.n, runs.rows)
    if runs.last >= runs.first:
        cols, inside = _band_columns(runs, grid.device, grid.dtype)
        band = grid.gather(-1, cols.expand(*grid.shape[:-1], cols.shape[-1]))
        out[..., runs.first : runs.last + 1] = band * inside  # a product: a broadcast masked_fill is slow on CPU
    if runs.hi:
        out[..., -1] += _staircase_sum(grid, runs.m - runs.hi, before=False)
    out[..., 0] -= out.sum(-1)
    return out


def _weight_buckets(weights: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """:func:`_reduce` of softmax weights whose rows sum to 1: the weight on row 0 of the table is 1 less
    the others (so the entries clipped to row 0 are never read)."""
    out = _reduce_shifted(weights, runs)
    out[..., 0] += 1
    return out


def _causal_top(mask, n: int, m: int, gap: int, max_distance: int) -> int | None:
    """The largest offset a query sees when ``mask`` hides every later key and leaves each row a key
    (causal, without key padding or documents), if it lies in ``(-k, k]``; else None.

    Query i sits at key index ``i + m - n`` and sees keys up to it, offsets up to ``gap + m - n``."""
    if not mask.causal or mask.key_mask is not None or mask.q_docs is not None:
        return None
    top = gap + m - n
    return top if -max_distance < top <= max_distance else None


class CausalBand(NamedTuple):
    """Where the visible band of one block lies when the offsets past ``top`` are hidden (causal).

    Entry ``(i, j)`` of a block of ``rows`` queries and ``keys`` keys has offset ``j - i + gap``.
    Offsets up to ``-k`` read table row 0; the visible ones above, ``-k + 1 .. top``, read table rows
    ``1 .. width`` (``width = top + k``): in row i the ``width`` columns from ``i + first`` on
    (``first = 1 - k - gap``), one diagonal per table row. Rows ``inner .. outer - 1`` hold all of
    theirs inside the block and are read as one strided view along the diagonals; the rest (the
    first rows of a sequence, whose band starts before key 0, and rows past the last key) through
    clamped column indices.
    """

    rows: int
    keys: int
    width: int
    first: int
    inner: int
    outer: int

    @staticmethod
    def of(rows: int, keys: int, gap: int, max_distance: int, top: int) -> CausalBand:
        width = top + max_distance
        first = 1 - max_distance - gap
        inner = min(max(-first, 0), rows)
        outer = min(max(keys - first - width + 1, inner), rows)
        return CausalBand(rows, keys, width, first, inner, outer)

    def edges(self) -> list[tuple[int, int]]:
        """The row ranges read through column indices."""
        return [(a, b) for a, b in ((0, self.inner), (self.outer, self.rows)) if b > a]


def _diagonals(grid: torch.Tensor, band: CausalBand) -> torch.Tensor:
    """``(..., outer - inner, width)`` view of ``grid`` ``(..., rows, keys)``: entry ``[i, u]`` is
    ``grid[..., inner + i, inner + i + first + u]`` (the band of rows ``inner .. outer - 1``)."""
    *lead, row_stride, col_stride = grid.stride()
    start = grid.storage_offset() + band.inner * row_stride + (band.inner + band.first) * col_stride
    size = (*grid.shape[:-2], band.outer - band.inner, band.width)
    return grid.as_strided(size, (*lead, row_stride + col_stride, col_stride), start)


@functools.lru_cache(maxsize=256)
def _edge_columns(band: CausalBand, a: int, b: int, device: torch.device, dtype: torch.dtype):
    """``(b - a, width)`` columns of rows ``a .. b - 1``'s band (clamped into the block) and whether each
    lies inside it (1 or 0 in ``dtype``)."""
    with building_tables():  # cached: an ordinary tensor even when first built under inference mode
        cols = torch.arange(a, b, device=device).unsqueeze(1) + band.first + torch.arange(band.width, device=device)
        return cols.clamp(0, band.keys - 1), ((cols >= 0) & (cols < band.keys)).to(dtype)


def _band_add_(grid: torch.Tensor, values: torch.Tensor, band: CausalBand) -> None:
    """``grid[..., i, i + first + u] += values[..., i, u]`` in place for the entries inside the block;
    grid ``(..., rows, keys)``, values ``(..., rows, width)`` (same leading shape)."""
    values = values.to(grid.dtype)
    if band.outer > band.inner:
        _diagonals(grid, band).add_(values[..., band.inner : band.outer, :])
    for a, b in band.edges():
        cols, inside = _edge_columns(band, a, b, grid.device, grid.dtype)
        part = values[..., a:b, :] * inside  # clamped columns outside the block add 0
        grid[..., a:b, :].scatter_add_(-1, cols.expand(part.shape), part)


def _band_read(grid: torch.Tensor, band: CausalBand) -> torch.Tensor:
    """The adjoint of :func:`_band_add_`: ``(..., rows, keys)`` -> ``(..., rows, width)``, entry ``[i, u]``
    is ``grid[..., i, i + first + u]`` (0 outside the block)."""
    middle = _diagonals(grid, band) if band.outer > band.inner else None
    if not band.edges():
        return middle
    pieces = []
    for a, b in ((0, band.inner), (band.inner, band.outer), (band.outer, band.rows)):
        if b <= a:
            continue
        if (a, b) == (band.inner, band.outer):
            pieces.append(middle)
            continue
        cols, inside = _edge_columns(band, a, b, grid.device, grid.dtype)
        pieces.append(grid[..., a:b, :].gather(-1, cols.expand(*grid.shape[:-2], b - a, band.width)) * inside)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)


def _causal_key_block(q: torch.Tensor, table: torch.Tensor, gap: int, max_distance: int, top: int) -> BlockTerm:
    """Shaw's key term under a causal mask whose largest visible offset is ``top``: each block's logits
    get ``q_i . (a^K_t - a^K_0)`` (``table`` is ``a^K`` scaled) on the visible diagonals of table rows
    ``t = 1 .. top + k`` (a strided view); the entries clipped to row 0 get nothing (a constant per
    row) and the hidden ones nothing."""
    width = top + max_distance
    # (b, h, n, width): the scores less each row's row-0 score, one product differentiated outside the kernel
    diffs = _offset_scores(q, table[..., 1 : width + 1, :] - table[..., :1, :])

    def band(s, e, k0, k1):
        return CausalBand.of(e - s, k1 - k0, gap + k0 - s, max_distance, top)

    def fn(s, e, k0, k1, diffs):
        b = band(s, e, k0, k1)
        cols, inside = _edge_columns(b, 0, b.rows, diffs.device, diffs.dtype)
        part = diffs[..., s:e, :] * inside
        return part.new_zeros(*part.shape[:-1], b.keys).scatter_add(-1, cols.expand(part.shape), part)

    def add(logits, s, e, k0, k1, diffs):
        _band_add_(logits, diffs[..., s:e, :], band(s, e, k0, k1))

    def backward(grad, s, e, k0, k1, tensors, grads):
        if grads[0] is not None:
            grads[0][..., s:e, :] += _band_read(grad, band(s, e, k0, k1))

    return BlockTerm(fn, (diffs,), backward, add)


def _causal_value_block(rel_v: torch.Tensor, gap: int, max_distance: int, top: int) -> BlockTerm:
    """Shaw's value term under a causal mask whose largest visible offset is ``top``. A row's weights
    sum to 1, so ``sum_j w_ij a^V_ij = a^V_0 + sum_band w_ij (a^V_t - a^V_0)`` over the visible
    diagonals of table rows ``t = 1 .. top + k``: the band read as a strided view, one product with the
    differences."""
    width = top + max_distance
    # the features' table (width + 1, d) or (h, width + 1, d): a^V_0, then a^V_t - a^V_0 (differentiable:
    # a^V's gradient comes from the table's, which the kernel forms)
    table = torch.cat([rel_v[..., :1, :], rel_v[..., 1 : width + 1, :] - rel_v[..., :1, :]], dim=-2)

    def band(s, e, k0, k1):
        return CausalBand.of(e - s, k1 - k0, gap + k0 - s, max_distance, top)

    def fn(weights, s, e, k0, k1):
        # features (b, h, rows, 1 + width): 1 (the row's weights sum to 1), then the band's weights
        work = arithmetic_dtype(weights.dtype)
        features = weights.new_empty(*weights.shape[:-1], 1 + width, dtype=work)
        features[..., 0] = 1
        features[..., 1:] = _band_read(weights, band(s, e, k0, k1))
        return features

    def backward(grad, weights, s, e, k0, k1, tensors, grads, grad_weights):
        # grad: the features' gradient (b, h, rows, 1 + width); d/d w_ij is grad_t on the band, plus
        # grad_0 for every j: the shift
        _band_add_(grad_weights, grad[..., 1:], band(s, e, k0, k1))
        return grad[..., :1].to(grad_weights.dtype)

    return BlockTerm(fn, (), backward, table=table)


def shaw_key_block(q: torch.Tensor, table: torch.Tensor, gap: int, max_distance: int) -> BlockTerm:
    """Shaw's key term per block for implicit positions (key j's offset from query i is
    ``j - i + gap``): ``q_i . table_c`` for q ``(b, h, n, d)`` and the scaled ``a^K`` table ``(2k + 1, d)``
    or ``(h, 2k + 1, d)``, spread along the block's diagonals.

    In the blocked kernel it is added in place less each row's row-0 score (the softmax ignores a
    constant per row), so only the ``2k + 1`` diagonals of the band and the entries clipped to row 2k
    are touched, forward and backward; under a causal mask (``BlockTerm.under_mask``) only the
    visible half of the band (:func:`_causal_key_block`)."""

    def runs(s, e, k0, k1):
        return OffsetRuns.of(e - s, k1 - k0, gap + k0 - s, max_distance)

    def fn(s, e, k0, k1, q, table):
        return expand_offsets(_offset_scores(q[..., s:e, :], table), runs(s, e, k0, k1))

    def add(logits, s, e, k0, k1, q, table):
        _add_offsets_(logits, _offset_scores(q[..., s:e, :], table), runs(s, e, k0, k1))

    def backward(grad, s, e, k0, k1, tensors, grads):
        q, table = tensors
        if grads[0] is None and grads[1] is None:
            return
        per_offset = _reduce_shifted(grad, runs(s, e, k0, k1))  # (b, h, rows, 2k + 1)
        if grads[0] is not None:
            grads[0][..., s:e, :] += _table_product(per_offset, table.to(per_offset.dtype))
        if grads[1] is not None:
            rows = q[..., s:e, :].to(per_offset.dtype)
            if table.ndim == 2:  # one (2k + 1, b h rows) @ (b h rows, d) product
                part = per_offset.reshape(-1, per_offset.shape[-1]).t() @ rows.reshape(-1, rows.shape[-1])
            else:
                part = (per_offset.transpose(-1, -2) @ rows).sum(0)
            grads[1] += part.to(grads[1].dtype)

    def under_mask(mask, n, m):
        top = _causal_top(mask, n, m, gap, max_distance)
        return term if top is None else _causal_key_block(q, table, gap, max_distance, top)

    term = BlockTerm(fn, (q, table), backward, add, under_mask)
    return term


def shaw_value_block(rel_v: torch.Tensor, gap: int, max_distance: int) -> BlockTerm:
    """Shaw's value term ``sum_j w_ij a^V_ij`` per block for implicit positions: the block's weights
    summed by offset (along its diagonals) into ``2k + 1`` buckets, then one product with ``a^V``.

    The block's weights sum to 1 in each row, so the bucket of table row 0 is 1 less the others and
    only the band's diagonals and the entries clipped to row 2k are read, forward and backward."""

    def fn(weights, s, e, k0, k1):
        # features (b, h, rows, 2k + 1): the block's weights summed by table row; the kernel multiplies
        # them with a^V (the term's table) for all rows at once
        work = arithmetic_dtype(weights.dtype)
        if torch.compiler.is_compiling():  # the diagonal sums read a strided view torch.compile cannot trace
            device = weights.device
            rel = torch.arange(k0, k1, device=device) - torch.arange(s, e, device=device).unsqueeze(1) + gap
            index = clipped_offsets(rel, max_distance).expand(weights.shape)
            buckets = weights.new_zeros(*weights.shape[:-1], 2 * max_distance + 1, dtype=work)
            return buckets.scatter_add(-1, index, weights.to(work))
        return _weight_buckets(weights.to(work), OffsetRuns.of(e - s, k1 - k0, gap + k0 - s, max_distance))

    def backward(grad, weights, s, e, k0, k1, tensors, grads, grad_weights):
        # grad: the features' gradient (b, h, rows, 2k + 1), grad_i . a^V_c; d/d w_ij is grad_c(ij),
        # added along the band less row 0's, which is the shift
        _add_offsets_(grad_weights, grad, OffsetRuns.of(e - s, k1 - k0, gap + k0 - s, max_distance))
        return grad[..., :1].to(grad_weights.dtype)

    def under_mask(mask, n, m):
        top = _causal_top(mask, n, m, gap, max_distance)
        return term if top is None else _causal_value_block(rel_v, gap, max_distance, top)

    term = BlockTerm(fn, (), backward, under_mask=under_mask, table=rel_v)
    return term


def shaw_value_block_explicit(rel_v: torch.Tensor, qpos: torch.Tensor, kpos: torch.Tensor, max_distance: int) -> BlockTerm:
    """Shaw's value term per block for integer positions ``(b, n)``, ``(b, m)``."""

    def fn(weights, s, e, k0, k1, rel_v, qpos, kpos):
        index = clipped_offsets(kpos[:, None, k0:k1] - qpos[:, s:e, None], max_distance)
        return value_offset_sums(weights, rel_v, index)

    return BlockTerm(fn, (rel_v, qpos, kpos))


def shaw_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_k: torch.Tensor,
    rel_v: torch.Tensor | None = None,
    *,
    max_distance: int = 16,
    causal: bool = False,
) -> torch.Tensor:
    """Attention with Shaw et al.'s relative key (and value) representations.

    q: ``(b, h, n, d)``; k, v: ``(b, h, m, d)``; rel_k, rel_v: ``(2 * max_distance + 1, d)`` (or
    ``(h, 2 * max_distance + 1, d)``), row ``clip(j - i, -max_distance, max_distance) + max_distance``
    for query i and key j. Query i sits at key index ``i + m - n`` (the queries are the last n of the m
    tokens, as with a key/value cache); with ``causal=True`` later keys are masked. Logits are scaled
    by ``1/sqrt(d)``. Returns ``(b, h, n, d)``. Runs on the blocked kernel of
    :mod:`posenc.attention.blocked` with the key and value terms per block (no ``(n, m)`` table).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_tensor(name, t, ndim=4)
    max_distance = check_int("max_distance", max_distance, minimum=0)
    check_bool("causal", causal)
    b, h, n, d = q.shape
    m = k.shape[-2]
    if k.shape[:2] != (b, h) or k.shape[-1] != d or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"`k`, `v` must be (b, h, m, d) matching `q` {tuple(q.shape)}, got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if m < n:
        raise ValueError(f"`k` must have at least as many keys as `q` has queries, got n={n}, m={m}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"`q`, `k` and `v` must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _check_table("rel_k", rel_k, max_distance, d, h)
    if rel_v is not None:
        _check_table("rel_v", rel_v, max_distance, v.shape[-1], h)
    check_same_device(q=q, k=k, v=v, rel_k=rel_k, rel_v=rel_v)
    if n == 0:  # no queries: an empty (b, h, 0, d_v) result, still attached to the inputs' graph
        return (q @ k.transpose(-1, -2)) @ v
    rel_k, rel_v = rel_k.to(q.dtype), None if rel_v is None else rel_v.to(q.dtype)
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec

    scale = 1.0 / math.sqrt(d)
    gap = n - m  # offset of key j from query i (which sits at key index i + m - n) is j - i + gap
    key = shaw_key_block(q, rel_k * scale, gap, max_distance)  # q_i . a^K_c / sqrt(d), spread by offset
    value = None if rel_v is None else shaw_value_block(rel_v, gap, max_distance)
    out, _ = blocked_attention(q, k, v, bias_term=key, value_term=value, mask=MaskSpec(causal=bool(causal)), scale=scale)
    return out


@register(
    "shaw",
    paper="Shaw et al. 2018, arXiv:1803.02155",
    summary="Learned vectors per clipped offset clip(j-i,-k,k), added to keys (and values) inside attention.",
)
class ShawRelativePosition(PositionEncoding):
    """Shaw et al.'s relative key/value tables, one instance per block.

    Args:
        head_dim: width of each head's queries, keys and values.
        heads: number of heads (used by ``tables="per_head"``).
        max_distance: the clipping distance k (>= 0); ``2k + 1`` table rows.
        values: also add ``a^V`` to the values (the paper's full form); False keeps keys only.
        tables: ``"shared"`` by all heads (the paper) or ``"per_head"``.
    """

    model_arguments = ("heads", "head_dim")
    per_layer = True

    def __init__(
        self,
        head_dim: int,
        heads: int = 1,
        *,
        max_distance: int = 16,
        values: bool = True,
        tables: Literal["shared", "per_head"] = "shared",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.heads = check_positive_int("heads", heads)
        self.max_distance = check_int("max_distance", max_distance, minimum=0)
        self.tables = check_choice("tables", tables, ("shared", "per_head"))
        self.values = check_bool("values", values)
        self.hooks = frozenset({"bias", "value"} if self.values else {"bias"})
        shape = (2 * max_distance + 1, head_dim) if tables == "shared" else (heads, 2 * max_distance + 1, head_dim)
        sizes = {"head_dim": head_dim, "max_distance": max_distance, **({"heads": heads} if tables == "per_head" else {})}
        check_table_fits(sizes, (2, *shape), dtype, device)  # a^K and a^V
        self.rel_k = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.rel_v = nn.Parameter(torch.empty(shape, device=device, dtype=dtype)) if self.values else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in (self.rel_k, self.rel_v):
            if table is not None and table.device.type != "meta":
                nn.init.normal_(table, std=self.head_dim**-0.5)

    def index(self, q_positions: Positions, k_positions: Positions, device: torch.device) -> torch.Tensor:
        """``(b | 1, n, m)`` int64 table rows ``clip(k_pos - q_pos, -k, k) + k``."""
        return clipped_offsets(relative_positions(q_positions, k_positions).to(device), self.max_distance)

    def _runs(self, q_positions: Positions, k_positions: Positions) -> OffsetRuns | None:
        # implicit positions: offsets constant along diagonals, no (n, m) index needed
        if q_positions.is_implicit and k_positions.is_implicit and q_positions.n > 0 and k_positions.n > 0:
            gap = k_positions.offset - q_positions.offset
            return OffsetRuns.of(q_positions.n, k_positions.n, gap, self.max_distance)
        return None

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """q ``(b, h, n, head_dim)`` -> ``q_i . a^K_ij / sqrt(head_dim)``, ``(b, h, n, m)``."""
        runs = self._runs(q_positions, k_positions)
        if runs is not None:
            # (b, h, n, d) @ (h | 1, d, 2k + 1) -> (b, h, n, 2k + 1), scaled on the small table
            table = _table_for_heads(self.rel_k).to(q.dtype) / math.sqrt(self.head_dim)
            return expand_offsets(q @ table.transpose(-1, -2), runs)
        index = self.index(q_positions, k_positions, q.device)
        return key_offset_scores(q, self.rel_k, index) / math.sqrt(self.head_dim)

    def _position_tensors(self, q_positions: Positions, k_positions: Positions, batch: int, device):
        qpos, kpos = position_tensors(q_positions, k_positions, batch, device)
        for name, p in (("q_positions", qpos), ("k_positions", kpos)):
            if p.is_floating_point() and not torch.compiler.is_compiling() and not torch.equal(p, p.round()):
                raise ValueError(f"Shaw et al.'s tables are indexed by integer offsets: `{name}` must be integer-valued")
        return qpos.long(), kpos.long()

    def _per_row(self, q: torch.Tensor) -> torch.Tensor:
        return _offset_scores(q, self.rel_k.to(q.dtype) / math.sqrt(self.head_dim))

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """The key term as a score_mod reading the ``(b, h, n, 2k + 1)`` scores ``q_i . a^K_c`` (for
        implicit positions at ``clip(kv_idx - q_idx + gap)``: compilable on CPU)."""
        gap = position_gap(q_positions, k_positions, q.device)
        if gap is not None:
            return shaw_key_mod_implicit(self._per_row(q), gap, self.max_distance)
        qpos, kpos = self._position_tensors(q_positions, k_positions, q.shape[0], q.device)
        return shaw_key_mod(self._per_row(q), qpos, kpos, self.max_distance)

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """The key term per block along diagonals (implicit positions; None otherwise)."""
        if self._runs(q_positions, k_positions) is None:
            return None
        gap = k_positions.offset - q_positions.offset
        return shaw_key_block(q, self.rel_k.to(q.dtype) / math.sqrt(self.head_dim), gap, self.max_distance)

    def block_value(self, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """The value term per block from the block's weights."""
        if self.rel_v is None:
            return None
        if self._runs(q_positions, k_positions) is not None:
            return shaw_value_block(self.rel_v, k_positions.offset - q_positions.offset, self.max_distance)
        device = self.rel_v.device
        batch = max(p.explicit.shape[0] for p in (q_positions, k_positions) if p.explicit is not None)
        qpos, kpos = self._position_tensors(q_positions, k_positions, batch, device)
        return shaw_value_block_explicit(self.rel_v, qpos, kpos, self.max_distance)

    def value_term(self, weights, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor | None:
        """weights ``(b, h, n, m)`` -> ``sum_j w_ij a^V_ij``, ``(b, h, n, head_dim)``."""
        if self.rel_v is None:
            return None
        runs = self._runs(q_positions, k_positions)
        if runs is not None:
            work = arithmetic_dtype(weights.dtype)  # bucket sums of half weights in float32
            buckets = reduce_offsets(weights.to(work), runs)  # (b, h, n, 2k + 1)
            return (buckets @ _table_for_heads(self.rel_v).to(work)).to(weights.dtype)
        return value_offset_sums(weights, self.rel_v, self.index(q_positions, k_positions, weights.device))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        """Self-contained attention: q ``(b, h, n, head_dim)``, k, v ``(b, h, m, head_dim)`` -> ``(b, h, n, head_dim)``.

        ``causal=True`` masks later keys; query i sits at key index ``i + m - n``.
        """
        for name, t in (("q", q), ("k", k), ("v", v)):
            check_float_tensor(name, t, ndim=4)
            check_dtype_matches(name, t, self)
            if t.shape[-1] != self.head_dim:
                raise ValueError(
                    f"`{name}` must have last dimension head_dim={self.head_dim}, got shape {tuple(t.shape)}"
                )
        return shaw_attention(q, k, v, self.rel_k, self.rel_v, max_distance=self.max_distance, causal=causal)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, heads={self.heads}, max_distance={self.max_distance}, "
            f"values={self.values}, tables={self.tables!r}"
        )
