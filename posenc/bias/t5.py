"""T5's relative position bias (Raffel et al. 2019, arXiv:1910.10683, section 2.1).

Each head learns one scalar per bucket of the offset ``key - query``. Half of the buckets (all of
them when causal) hold exact small offsets, the rest logarithmically wider ranges up to
``max_distance``, beyond which all offsets share the last bucket. Bidirectional attention uses
separate buckets for keys before and after the query. The bucketing follows the official Mesh
TensorFlow ``_relative_position_bucket`` (and Hugging Face's transcription of it); verified against a
float64 transcription in tests/bias/test_t5.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from posenc.bias.relative import (
    BiasEncoding,
    diagonal_block_term,
    position_tensors,
    relative_positions,
    table_length,
    toeplitz,
)
from posenc.core.base import DerivedTablesMixin
from posenc.core.memory import check_table_memory
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.tables import building_tables
from posenc.core.terms import BlockTerm, ScoreMod, position_gap
from posenc.core.validation import check_bool, check_int, check_positive_int, check_table_fits, check_tensor


def _check_buckets(num_buckets: int, max_distance: int, bidirectional: bool) -> None:
    check_int("num_buckets", num_buckets, minimum=4 if bidirectional else 2)
    if bidirectional and num_buckets % 2:
        raise ValueError(f"`num_buckets` must be even when bidirectional (half per direction), got {num_buckets}")
    exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    check_int("max_distance", max_distance, minimum=exact + 1)


def t5_relative_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """Bucket indices in ``[0, num_buckets)`` for offsets ``key position - query position`` (any shape)."""
    check_tensor("relative_position", relative_position)
    if relative_position.is_floating_point() or relative_position.dtype == torch.bool:
        raise ValueError(f"`relative_position` must be an integer tensor, got {relative_position.dtype}")
    check_bool("bidirectional", bidirectional)
    _check_buckets(num_buckets, max_distance, bidirectional)
    return _bucket_of(relative_position, bidirectional, num_buckets, max_distance)


def _bucket_of(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """:func:`t5_relative_bucket` without the checks (elementwise: usable inside a score_mod)."""
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets  # keys after the query
        distance = rel.abs()
    else:
        distance = (-rel).clamp(min=0)  # only keys at or before the query
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced buckets for max_exact <= distance < max_distance; clamp(min=1) keeps log finite
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def _diagonal(q_positions: Positions, k_positions: Positions) -> bool:
    # implicit positions: offsets are constant along the diagonals of the (n, m) grid
    return q_positions.is_implicit and k_positions.is_implicit and q_positions.n > 0 and k_positions.n > 0


@register(
    "t5",
    paper="Raffel et al. 2019, arXiv:1910.10683",
    summary="A learned scalar per head for each log-bucketed query-key offset, added to the logits.",
)
class T5RelativeBias(DerivedTablesMixin, BiasEncoding):
    """T5 relative bias: an ``(num_buckets, heads)`` learned table indexed by offset buckets.

    Args:
        heads: number of attention heads.
        causal: causal buckets (only past offsets) instead of bidirectional ones.
        num_buckets, max_distance: the bucketing (32 and 128 in T5).
    """

    model_arguments = ("heads", "causal")
    hooks = frozenset({"bias"})

    def __init__(
        self,
        heads: int,
        *,
        causal: bool = False,
        num_buckets: int = 32,
        max_distance: int = 128,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.causal = check_bool("causal", causal)
        _check_buckets(num_buckets, max_distance, not causal)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        check_table_fits({"num_buckets": num_buckets, "heads": heads}, (num_buckets, heads), dtype, device)
        self.bias = nn.Embedding(num_buckets, heads, device=device, dtype=dtype)
        self.reset_parameters()
        # bucket of every offset -(L-1) .. L-1 for implicit positions: derived, never saved, rebuilt
        # (longer) when a longer sequence comes
        self.register_buffer("buckets_cached", torch.empty(0, dtype=torch.long, device=device), persistent=False)

    def reset_parameters(self) -> None:
        """T5's initialisation of the table (after ``nn.Embedding``'s own; see :mod:`posenc.core.meta`)."""
        nn.init.normal_(self.bias.weight, std=0.02)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        # the bucket cache at its current length, recomputed (to_empty leaves it uninitialised)
        length = (self.buckets_cached.shape[0] + 1) // 2
        self.buckets_cached = self._bucket(torch.arange(max(2 * length - 1, 0), device=device) - (length - 1))

    def buckets(self, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """``(b | 1, n, m)`` bucket indices of every query-key pair."""
        if _diagonal(q_positions, k_positions):
            return toeplitz(self._diagonal_buckets(q_positions, k_positions), k_positions.n).unsqueeze(0)
        rel = relative_positions(q_positions, k_positions)
        if rel.is_floating_point():
            raise ValueError(
                f"`positions` must be an integer tensor for the T5 bias (its buckets are defined for whole "
                f"offsets), got {rel.dtype} positions"
            )
        return self._bucket(rel.to(self.bias.weight.device))

    def _diagonal_buckets(self, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """``(n + m - 1,)`` buckets of the offsets ``j - i`` from ``-(n - 1)`` to ``m - 1`` (implicit positions)."""
        n, m = q_positions.n, k_positions.n
        gap = k_positions.offset - q_positions.offset  # offset of key j from query i is j - i + gap
        needed = max(q_positions.end, k_positions.end)
        length = (self.buckets_cached.shape[0] + 1) // 2
        # the cache covers offsets -(L - 1) .. L - 1; past about twice the offsets in use (a few tokens at
        # a far offset) the n + m - 1 buckets are computed directly, costing what the tokens cost
        if torch.compiler.is_compiling() or table_length(needed, length) > 2 * (n + m) + 256:
            rel = torch.arange(gap - n + 1, gap + m, device=self.bias.weight.device)
            return self._bucket(rel)
        if needed > length or self.buckets_cached.device != self.bias.weight.device:
            length = table_length(needed, length)
            with building_tables():
                self.buckets_cached = self._bucket(torch.arange(-length + 1, length, device=self.bias.weight.device))
        start = gap - n + 1 + length - 1
        return self.buckets_cached[start : start + n + m - 1]

    def _bucket(self, rel: torch.Tensor) -> torch.Tensor:
        return t5_relative_bucket(
            rel, bidirectional=not self.causal, num_buckets=self.num_buckets, max_distance=self.max_distance
        )

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        n, m = q_positions.n, k_positions.n
        batch = max(p.explicit.shape[0] if p.explicit is not None else 1 for p in (q_positions, k_positions))
        # the bias, and for explicit positions the int64 bucket of every pair
        check_table_memory(
            lambda: f"the T5 bias (batch={batch}, heads={self.heads}, n={n}, m={m})",
            (batch, n, m),
            bytes_per_entry=self.bias.weight.element_size() * self.heads + 8,
        )
        if _diagonal(q_positions, k_positions):
            # the bias depends on j - i only: one value per diagonal, (h, n + m - 1), spread over the
            # (n, m) grid; its gradient is summed along the diagonals before reaching the table
            per_diagonal = F.embedding(self._diagonal_buckets(q_positions, k_positions), self.bias.weight).t()
            return toeplitz(per_diagonal, k_positions.n).unsqueeze(0)
        # (b | 1, n, m, h) -> (b | 1, h, n, m)
        return self.bias(self.buckets(q_positions, k_positions)).permute(0, 3, 1, 2)

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """For implicit positions: the learned value of each diagonal ``(h, n + m - 1)``, read per
        block as a view (its gradient sums along the diagonals before reaching the table)."""
        if not _diagonal(q_positions, k_positions):
            return None
        # (n + m - 1, h) -> (h, n + m - 1), contiguous so that each block's rows read adjacent values
        per_diagonal = F.embedding(self._diagonal_buckets(q_positions, k_positions), self.bias.weight).t().contiguous()
        return diagonal_block_term(per_diagonal, q_positions.n)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod | None:
        """``score + table[bucket(j - i), h]``, the bucket computed elementwise: for implicit positions
        from ``kv_idx - q_idx`` (compilable on CPU), else from the positions (None for float positions:
        the materialised bias then reports them)."""
        bidirectional, num_buckets, max_distance = not self.causal, self.num_buckets, self.max_distance
        gap = position_gap(q_positions, k_positions, self.bias.weight.device)
        if gap is not None:

            def closed(score, b, h, q_idx, kv_idx, table, gap):
                bucket = _bucket_of(kv_idx - q_idx + gap, bidirectional, num_buckets, max_distance)
                return score + table[bucket, h].to(score.dtype)

            return ScoreMod(closed, (self.bias.weight, gap), static=((0, 1), ()))
        qpos, kpos = position_tensors(q_positions, k_positions, q.shape[0], self.bias.weight.device)
        if qpos.is_floating_point() or kpos.is_floating_point():
            return None

        def fn(score, b, h, q_idx, kv_idx, table, qpos, kpos):
            bucket = _bucket_of(kpos[b, kv_idx] - qpos[b, q_idx], bidirectional, num_buckets, max_distance)
            return score + table[bucket, h].to(score.dtype)

        return ScoreMod(fn, (self.bias.weight, qpos, kpos))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, causal={self.causal}, num_buckets={self.num_buckets}, max_distance={self.max_distance}"
