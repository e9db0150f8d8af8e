"""The base of every bias that is a function of the query-key offset alone.

Such a bias ``B_h(j - i)`` takes one value per distinct offset, so for implicit positions it is
evaluated on the ``n + m - 1`` offsets only and spread over the ``(n, m)`` grid by
:func:`~posenc.bias.relative.toeplitz` (whose backward sums the gradient along diagonals); explicit
positions evaluate it on the ``(b | 1, n, m)`` offsets directly. The attention engine gets the same
``(h, n + m - 1)`` table as a FlexAttention ``score_mod`` (read at ``kv_idx - q_idx``) and as a
per-block view for the blocked kernel, so no ``(n, m)`` bias is built for implicit positions.
Subclasses define :meth:`OffsetBias.offset_bias`.
"""

from __future__ import annotations

import torch

from posenc.bias.relative import BiasEncoding, diagonal_block_term, relative_positions, toeplitz
from posenc.core.memory import check_table_memory
from posenc.core.positions import Positions
from posenc.core.terms import BlockTerm, ScoreMod, gathered_bias_mod


def causal_distance(offsets: torch.Tensor, causal: bool) -> torch.Tensor:
    """The distance a bias reads from ``offsets = j - i``: ``i - j`` (clamped at 0) causally, ``|i - j|`` otherwise.

    In causal attention the keys past the query are masked, so their (clamped) value never matters.
    """
    return (-offsets).clamp(min=0) if causal else offsets.abs()


class OffsetBias(BiasEncoding):
    """A ``"bias"`` encoding whose value depends on ``j - i`` only (relative by construction)."""

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        """``offsets`` ``(...)`` (key - query, float64) -> bias ``(..., heads)``, in float32 (float64
        for float64 parameters)."""
        raise NotImplementedError

    def offset_bias_for(self, offsets: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        """:meth:`offset_bias` for a call with queries ``q`` (None when called as ``bias(n, m)``); an
        encoding without parameters whose precision follows the queries' dtype overrides it."""
        return self.offset_bias(offsets)

    def _device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def per_diagonal(
        self, q_positions: Positions, k_positions: Positions, q: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """For implicit positions: the ``(heads, n + m - 1)`` bias of the offsets ``j - i`` from the
        first query's farthest key to the last (for queries ``q``, see :meth:`offset_bias_for`);
        None for explicit positions or an empty side."""
        n, m = q_positions.n, k_positions.n
        if not (q_positions.is_implicit and k_positions.is_implicit and n > 0 and m > 0):
            return None
        gap = k_positions.offset - q_positions.offset  # offset of key j from query i is j - i + gap
        offsets = torch.arange(gap - n + 1, gap + m, device=self._device(), dtype=torch.float64)
        # (n + m - 1, heads) -> (heads, n + m - 1)
        return self.offset_bias_for(offsets, q).t()

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        device = self._device()
        if q_positions.is_implicit and k_positions.is_implicit:
            # refused before the per-offset table is computed (4 bytes an entry at least; checked again below)
            what = lambda: f"the {type(self).__name__} bias (heads={self.heads}, n={q_positions.n}, m={k_positions.n})"
            check_table_memory(what, (self.heads, q_positions.n, k_positions.n))
        diagonals = self.per_diagonal(q_positions, k_positions, q)
        if diagonals is not None:
            # the (heads, n, m) grid is materialised here, unlike the per-offset table
            heads, n, m = diagonals.shape[0], q_positions.n, k_positions.n
            what = lambda: f"the {type(self).__name__} bias (heads={heads}, n={n}, m={m})"
            check_table_memory(what, (heads, n, m), bytes_per_entry=diagonals.element_size())
            # (heads, n + m - 1) -> (1, heads, n, m)
            return toeplitz(diagonals, k_positions.n).unsqueeze(0)
        n, m = q_positions.n, k_positions.n
        batch = max(p.explicit.shape[0] if p.explicit is not None else 1 for p in (q_positions, k_positions))
        what = lambda: f"the {type(self).__name__} bias (batch={batch}, heads={self.heads}, n={n}, m={m})"
        check_table_memory(what, (batch, self.heads, n, m))
        offsets = relative_positions(q_positions, k_positions).to(device=device, dtype=torch.float64)
        # (b | 1, n, m, heads) -> (b | 1, heads, n, m)
        return self.offset_bias_for(offsets, q).permute(0, 3, 1, 2)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """Implicit positions: ``score + table[h, kv_idx - q_idx + n - 1]`` over the ``(h, n + m - 1)``
        per-offset table; explicit positions: the materialised bias, gathered."""
        diagonals = self.per_diagonal(q_positions, k_positions, q)
        if diagonals is None:
            return gathered_bias_mod(self.score_bias(q, k, q_positions=q_positions, k_positions=k_positions), q.shape[0])
        shift = q_positions.n - 1

        def fn(score, b, h, q_idx, kv_idx, table):
            return score + table[h, kv_idx - q_idx + shift].to(score.dtype)

        return ScoreMod(fn, (diagonals.contiguous(),))

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """For implicit positions: each block of the blocked kernel is a view of the per-offset table."""
        diagonals = self.per_diagonal(q_positions, k_positions, q)
        return None if diagonals is None else diagonal_block_term(diagonals.contiguous(), q_positions.n)
