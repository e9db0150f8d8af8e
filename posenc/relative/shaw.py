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
through an ``(n, m)`` index. Inference (:func:`shaw_attention` without gradients) works on blocks
of query rows and touches only what changes the softmax: the ``2k - 1`` band diagonals and the
far-right offsets (a constant per row is dropped), so its extra memory is linear in the sequence
length and it never holds the full ``(n, m)`` logits. Verified against the naive ``(n, m, d)``
transcription of equations 3-5 in float64, with gradients by ``gradcheck``
(tests/relative/test_shaw.py, which also measures the peak memory at n = 2048).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from posenc.bias.fused import _row_blocks, attention_with_bias
from posenc.bias.relative import relative_positions
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_dtype_matches,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_same_device,
)

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
    work = torch.promote_types(weights.dtype, torch.float32)
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


def _skew(by_diagonal: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``(..., n, n + m - 1)`` contiguous -> ``(..., n, m)`` view with entry ``(i, j)`` at column
    ``j - i + n - 1`` of row i (rows read with a stride one shorter)."""
    if n == 1:
        return by_diagonal
    width = n + m - 1
    flat = by_diagonal.flatten(-2)[..., n - 1 : n - 1 + n * (width - 1)]
    return flat.unflatten(-1, (n, width - 1))[..., :m]


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
    return _skew(torch.cat(pieces, dim=-1), runs.n, runs.m)


def _reduce(grid: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """``(..., n, m)`` -> ``(..., n, 2k + 1)``: column c of row i sums the entries of row i whose clipped
    offset is row c (the adjoint of :func:`_expand`)."""
    lead = grid.shape[:-2]
    n, m = runs.n, runs.m
    width = n + m - 1
    # (..., n, m) -> (..., n, (n - 1) + m + (n - 1)) in one pass; read with a row stride one longer,
    # row i starts n - 1 - i columns left of its first entry: the (..., n, n + m - 1) grid by diagonal
    padded = F.pad(grid, (n - 1, n - 1)).flatten(-2)
    strides = (*padded.stride()[:-1], m + 2 * n - 1, 1)
    by_diagonal = padded.as_strided((*lead, n, width), strides, padded.storage_offset())
    out = grid.new_zeros(*lead, runs.n, runs.rows)
    if runs.lo:
        out[..., 0] = by_diagonal[..., : runs.lo].sum(-1)
    if runs.last >= runs.first:
        out[..., runs.first : runs.last + 1] = by_diagonal[..., runs.lo : width - runs.hi]
    if runs.hi:
        out[..., -1] = by_diagonal[..., width - runs.hi :].sum(-1)
    return out


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
    return _ExpandOffsets.apply(per_row, runs)


def reduce_offsets(grid: torch.Tensor, runs: OffsetRuns) -> torch.Tensor:
    """Differentiable ``(..., n, m) -> (..., n, 2k + 1)`` sum of each row's entries by clipped offset."""
    return _ReduceOffsets.apply(grid, runs)


def _check_table(name: str, table: torch.Tensor, max_distance: int, d: int, heads: int) -> None:
    check_float_tensor(name, table, ndim=(2, 3))
    r = 2 * max_distance + 1
    if table.shape[-2:] != (r, d) or (table.ndim == 3 and table.shape[0] != heads):
        raise ValueError(
            f"`{name}` must have shape (2*max_distance+1, d) = ({r}, {d}) or (heads, {r}, {d}), "
            f"got {tuple(table.shape)}"
        )


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
    by ``1/sqrt(d)``. Returns ``(b, h, n, d)``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_tensor(name, t, ndim=4)
    max_distance = check_int("max_distance", max_distance, minimum=0)
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

    scale = 1.0 / math.sqrt(d)
    # q_i . a^K_c / sqrt(d) for every query and table row: (b, h, n, 2k + 1)
    per_row = q @ (_table_for_heads(rel_k).to(q.dtype) * scale).transpose(-1, -2)
    gap = n - m  # offset of key j from query i (which sits at key index i + m - n) is j - i + gap
    tables = (q, k, v, rel_k) if rel_v is None else (q, k, v, rel_k, rel_v)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tables):
        # differentiable: the full (n, m) bias by diagonal runs inside one attention node
        runs = OffsetRuns.of(n, m, gap, max_distance)
        bias = expand_offsets(per_row, runs)
        out, weights = attention_with_bias(q, k, v, bias, scale=scale, causal=causal, need_weights=rel_v is not None)
        if rel_v is None:
            return out
        work = torch.promote_types(weights.dtype, torch.float32)
        return out + (reduce_offsets(weights.to(work), runs) @ _table_for_heads(rel_v).to(work)).to(out.dtype)
    with torch.no_grad():
        return _shaw_blocks(q, k, v, per_row, rel_v, max_distance, causal, scale)


def _shaw_blocks(q, k, v, per_row, rel_v, max_distance: int, causal: bool, scale: float) -> torch.Tensor:
    """Inference form of :func:`shaw_attention`, ``ROW_BLOCK`` query rows at a time.

    Softmax ignores a constant added to a row, so the key term adds ``a^K_c - a^K_0`` only: nothing
    on the far-left offsets (row 0), one value per diagonal on the ``2k - 1`` band offsets, one per
    row on the far right (row 2k), which causal attention masks anyway. The value term needs only the
    weight on each band diagonal and on the far right; the far left has the rest of the row's weight
    (the weights sum to one).
    """
    b, h, n, _ = q.shape
    m, kmax, gap = k.shape[-2], max_distance, q.shape[-2] - k.shape[-2]
    per_row = per_row - per_row[..., :1]  # row constants do not change the weights
    table_v = None if rel_v is None else _table_for_heads(rel_v).to(torch.promote_types(v.dtype, torch.float32))
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    keys_t = k.transpose(-1, -2)
    last = kmax if causal else None  # causal attention hides the positive offsets
    for s in range(0, n, ROW_BLOCK):
        e = min(s + ROW_BLOCK, n)
        logits = torch.matmul(q[..., s:e, :], keys_t).mul_(scale)  # (b, h, rows, m)
        block_rows = per_row[..., s:e, :]
        if kmax > 0:
            for view, rows, c in _band(logits, s, gap, kmax, last):
                view.add_(block_rows[..., rows, c])
            if not causal:  # causal attention masks the far right
                for cols, weight in _far_right(logits, s, gap, kmax):
                    logits[..., cols] += block_rows[..., -1:] * weight
        if causal:
            # query i sees keys up to i - gap: columns from e - gap on are hidden for every row
            logits[..., e - gap :] = float("-inf")
            hidden = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device).triu_(1)
            logits[..., s - gap : e - gap].masked_fill_(hidden, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        del logits
        block = torch.matmul(weights, v)
        if table_v is not None:
            mass = weights.new_zeros(*weights.shape[:-1], 2 * kmax + 1, dtype=table_v.dtype)
            if kmax > 0:
                for view, rows, c in _band(weights, s, gap, kmax, last):
                    mass[..., rows, c] = view
                if not causal:  # causal attention gives the far right no weight
                    for cols, weight in _far_right(weights, s, gap, kmax):
                        mass[..., -1] += (weights[..., cols] * weight).sum(-1, dtype=mass.dtype)
            mass[..., 0] = 1 - mass[..., 1:].sum(-1)
            block = block + (mass @ table_v).to(block.dtype)
        out[..., s:e, :] = block
    return out


def _band(
    grid: torch.Tensor, s: int, gap: int, kmax: int, last: int | None = None
) -> list[tuple[torch.Tensor, slice, slice | int]]:
    """The band offsets ``-k < j - i + gap < k`` of rows ``s ..`` (a block) of an ``(..., rows, m)`` grid,
    table rows 1 .. ``last`` (default 2k - 1; fewer when a causal mask hides the others):
    ``(view, rows, table rows)`` such that ``view`` matches ``per_row[..., rows, table rows]``. One
    strided ``(..., rows, last)`` view when every row has all of them, else one diagonal per offset."""
    rows, m = grid.shape[-2:]
    last = 2 * kmax - 1 if last is None else min(last, 2 * kmax - 1)
    if last < 1:
        return []
    low, high = 1 - kmax - gap, last - kmax - gap  # key minus query index of the first and last band offset
    if s + low >= 0 and s + rows - 1 + high <= m - 1 and grid.is_contiguous():
        # entry (r, t) at column s + r + low + t: a row stride one longer than the grid's
        strides = (*grid.stride()[:-2], m + 1, 1)
        view = grid.as_strided((*grid.shape[:-2], rows, last), strides, grid.storage_offset() + s + low)
        return [(view, slice(None), slice(1, last + 1))]
    views = []
    for c in range(1, last + 1):
        offset = s + c - kmax - gap  # column minus local row along this diagonal
        first, last = max(0, -offset), min(rows, m - offset)  # the local rows that have it
        if last > first:
            views.append((torch.diagonal(grid, offset, -2, -1), slice(first, last), c))
    return views


def _far_right(grid: torch.Tensor, s: int, gap: int, kmax: int) -> list[tuple[slice, torch.Tensor | float]]:
    """Columns of the offsets ``j - i + gap >= k`` in rows ``s ..`` of an ``(..., rows, m)`` grid:
    ``(columns, weight)`` pairs, weight 1 where every row has them, else a ``(rows, columns)`` 0/1 mask."""
    rows, m = grid.shape[-2:]
    start = s + kmax - gap  # first such column of row s; row s + r starts r later
    parts: list[tuple[slice, torch.Tensor | float]] = []
    full = max(start + rows - 1, 0)
    if full < m:
        parts.append((slice(full, m), 1.0))
    lo, hi = max(start, 0), min(start + rows - 1, m)
    if hi > lo:
        cols = torch.arange(lo, hi, device=grid.device)
        mask = (torch.arange(rows, device=grid.device).unsqueeze(1) + start <= cols).to(grid.dtype)
        parts.append((slice(lo, hi), mask))
    return parts


def _band_values(grid: torch.Tensor, s: int, gap: int, kmax: int, out: torch.Tensor, last: int) -> None:
    """Write the band entries of rows ``s ..`` of ``grid`` ``(..., rows, keys)`` into columns 1 .. 2k - 1
    of ``out`` ``(..., rows, 2k + 1)`` and the far-right sums into its last column (table rows past
    ``last`` are hidden by a mask and left at zero)."""
    for view, rows, c in _band(grid, s, gap, kmax, last):
        out[..., rows, c] = view
    for cols, weight in _far_right(grid, s, gap, kmax) if last >= 2 * kmax else ():
        part = grid[..., cols] if isinstance(weight, float) else grid[..., cols] * weight
        out[..., -1] += part.sum(-1, dtype=out.dtype)


def _add_band(grid: torch.Tensor, s: int, gap: int, kmax: int, per_row: torch.Tensor, last: int) -> None:
    """Add ``per_row[..., c] - per_row[..., 0]`` ``(..., rows, 2k + 1)`` at every entry of offset row
    c >= 1 of rows ``s ..`` of ``grid`` (the row-0 value is a constant per row, left out; rows past
    ``last`` are hidden by a mask and skipped)."""
    for view, rows, c in _band(grid, s, gap, kmax, last):
        base = per_row[..., rows, 0]
        view.add_(per_row[..., rows, c] - (base if isinstance(c, int) else base.unsqueeze(-1)))
    for cols, weight in _far_right(grid, s, gap, kmax) if last >= 2 * kmax else ():
        grid[..., cols] += (per_row[..., -1:] - per_row[..., :1]) * weight


class _ShawAttention(torch.autograd.Function):
    """Shaw et al.'s attention with both tables for implicit positions, in blocks of query rows.

    Only what changes the softmax is formed: a constant per row is dropped from the key term, so it
    touches the ``2k - 1`` band diagonals and the far-right offsets; the value term's weight per
    offset is read the same way (the far left has the rest of each row's weight). The backward
    uses the same two facts for the gradients (the rows of the logits' gradient sum to zero).
    """

    @staticmethod
    def forward(ctx, q, k, v, rel_k, rel_v, gap, max_distance, causal, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        n, m, kmax = q.shape[-2], k.shape[-2], max_distance
        table_k, table_v = _table_for_heads(rel_k).to(q.dtype), _table_for_heads(rel_v).to(q.dtype)
        per_row = q @ (table_k * scale).transpose(-1, -2)  # (b, h, n, 2k + 1)
        blocks = _row_blocks(n, m, causal)
        # the highest table row a query can see: causal hides offsets j - i + gap > m - n + gap
        last = min(2 * kmax, kmax + m - n + gap) if causal else 2 * kmax
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        mass = q.new_zeros(*q.shape[:-1], 2 * kmax + 1)  # weight on each offset row
        weights = []
        for s, e, keys in blocks:
            logits = torch.matmul(q[..., s:e, :], k[..., :keys, :].transpose(-1, -2)).mul_(scale)
            if kmax > 0:
                _add_band(logits, s, gap, kmax, per_row[..., s:e, :], last)
            if causal:  # row s + r sees keys up to s + r + m - n: the last e - s columns hide a triangle
                hidden = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device).triu_(1)
                logits[..., keys - (e - s) :].masked_fill_(hidden, float("-inf"))
            w = torch.softmax(logits, dim=-1)
            del logits
            block_mass = mass[..., s:e, :]
            if kmax > 0:
                _band_values(w, s, gap, kmax, block_mass, last)
            block_mass[..., 0] = 1 - block_mass[..., 1:].sum(-1)
            out[..., s:e, :] = torch.matmul(w, v[..., :keys, :]) + block_mass @ table_v
            weights.append(w)
        ctx.save_for_backward(q, k, v, rel_k, rel_v, out, mass, *weights)
        ctx.blocks, ctx.gap, ctx.kmax, ctx.scale, ctx.last = blocks, gap, kmax, scale, last
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, k, v, rel_k, rel_v, out, mass, *weights = ctx.saved_tensors
        gap, kmax, scale, last = ctx.gap, ctx.kmax, ctx.scale, ctx.last
        grad = grad.contiguous()
        table_k, table_v = _table_for_heads(rel_k).to(q.dtype), _table_for_heads(rel_v).to(q.dtype)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        # gradient of the weights: grad_i . (v_j + a^V_c); a^V_0 is a constant per row, dropped
        grad_rows = grad @ table_v.transpose(-1, -2)  # (b, h, n, 2k + 1)
        delta = (grad * out).sum(-1, keepdim=True) - grad_rows[..., :1]  # sum_j w_ij (dropped form)
        logit_mass = q.new_zeros(*q.shape[:-1], 2 * kmax + 1)  # gradient of the logits per offset row
        for (s, e, keys), w in zip(ctx.blocks, weights):
            g = grad[..., s:e, :]
            grad_v[..., :keys, :] += torch.matmul(w.transpose(-1, -2), g)
            grad_w = torch.matmul(g, v[..., :keys, :].transpose(-1, -2))
            if kmax > 0:
                _add_band(grad_w, s, gap, kmax, grad_rows[..., s:e, :], last)
            grad_logits = grad_w.sub_(delta[..., s:e, :]).mul_(w)  # softmax backward, in place
            grad_q[..., s:e, :] = torch.matmul(grad_logits, k[..., :keys, :])
            grad_k[..., :keys, :] += torch.matmul(grad_logits.transpose(-1, -2), q[..., s:e, :]).mul_(scale)
            block = logit_mass[..., s:e, :]
            if kmax > 0:
                _band_values(grad_logits, s, gap, kmax, block, last)
            block[..., 0] = -block[..., 1:].sum(-1)  # each row of grad_logits sums to zero
        # the key term q_i . a^K_c * scale: its gradient through the offset rows
        grad_q = grad_q.add_(logit_mass @ table_k).mul_(scale)
        grad_rel_k = torch.einsum("bhnr,bhnd->hrd", logit_mass, q) * scale
        grad_rel_v = torch.einsum("bhnr,bhnd->hrd", mass, grad)
        if rel_k.ndim == 2:
            grad_rel_k, grad_rel_v = grad_rel_k.sum(0), grad_rel_v.sum(0)
        return grad_q, grad_k, grad_v, grad_rel_k.to(rel_k.dtype), grad_rel_v.to(rel_v.dtype), None, None, None, None


def shaw_attention_implicit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_k: torch.Tensor,
    rel_v: torch.Tensor,
    *,
    gap: int,
    max_distance: int,
    causal: bool,
) -> torch.Tensor:
    """Differentiable Shaw attention with both tables when key j's offset from query i is
    ``j - i + gap`` (implicit positions); ``causal`` hides keys ``j > i + m - n``. Shapes as
    :func:`shaw_attention`; inputs unchecked (the callers check them)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return _ShawAttention.apply(q, k, v, rel_k, rel_v, int(gap), int(max_distance), bool(causal), scale)


@register(
    "shaw",
    family="relative",
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

    family = "relative"
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
        self.values = bool(values)
        self.hooks = frozenset({"bias", "value"} if self.values else {"bias"})
        shape = (2 * max_distance + 1, head_dim) if tables == "shared" else (heads, 2 * max_distance + 1, head_dim)
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

    def fused_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        q_positions: Positions,
        k_positions: Positions,
        causal: bool,
    ) -> torch.Tensor | None:
        """The whole attention with both tables, ``(b, h, n, head_dim)``, for implicit positions in
        float32/float64 (None otherwise: the caller then uses :meth:`score_bias` and :meth:`value_term`).
        ``causal`` hides keys ``j > i + m - n``."""
        runs = self._runs(q_positions, k_positions)
        if runs is None or self.rel_v is None or q.dtype not in (torch.float32, torch.float64):
            return None
        gap = k_positions.offset - q_positions.offset
        return shaw_attention_implicit(
            q, k, v, self.rel_k, self.rel_v, gap=gap, max_distance=self.max_distance, causal=causal
        )

    def value_term(self, weights, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor | None:
        """weights ``(b, h, n, m)`` -> ``sum_j w_ij a^V_ij``, ``(b, h, n, head_dim)``."""
        if self.rel_v is None:
            return None
        runs = self._runs(q_positions, k_positions)
        if runs is not None:
            work = torch.promote_types(weights.dtype, torch.float32)  # bucket sums of half weights in float32
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
