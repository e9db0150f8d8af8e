"""ALiBi, attention with linear biases (Press et al. 2021, arXiv:2108.12409).

No encoding is added anywhere; each head h adds ``-m_h * (i - j)`` to the logit of query i and key
j <= i. The slopes ``m_h`` form a geometric sequence starting at and with ratio ``2^(-8/H)`` for H
a power of two; for other H the paper (and its official code, ``get_slopes``) takes the slopes of
the closest smaller power of two followed by every other slope of twice that power. Encoders use the
symmetric form ``-m_h * |i - j|``. Verified against a float64 transcription of the paper's rule in
tests/bias/test_alibi.py, including the published slopes for 8 heads (1/2, 1/4, ..., 1/256).
"""

from __future__ import annotations

import math

import torch

from posenc.bias.relative import (
    BiasEncoding,
    diagonal_block_term,
    implicit_window,
    position_tensors,
    relative_positions,
    square_cache_length,
)
from posenc.core.base import DerivedTablesMixin
from posenc.core.memory import check_table_memory, fits
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.terms import BlockTerm, ScoreMod, position_gap
from posenc.core.validation import (
    check_bool,
    check_fits,
    check_float_dtype,
    check_float_tensor,
    check_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
    check_tensor,
)


def _power_of_two_slopes(n: int) -> list[float]:
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]


def alibi_slopes(num_heads: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(num_heads,)`` head slopes of ALiBi, exactly as the paper defines them."""
    check_positive_int("num_heads", num_heads)
    check_float_dtype("dtype", dtype)
    check_fits("num_heads", num_heads, (num_heads,), torch.float64, device)
    # the slopes are first Python floats on the host (about 32 bytes each), whatever the device
    check_fits("num_heads", num_heads, (num_heads, 4), torch.float64, "cpu")
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = _power_of_two_slopes(closest)
    if closest != num_heads:
        slopes += _power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=dtype, device=device)


def alibi_bias(relative: torch.Tensor, slopes: torch.Tensor, *, symmetric: bool = False) -> torch.Tensor:
    """relative (key - query): ``(b | 1, n, m)``; slopes: ``(h,)`` -> bias ``(b | 1, h, n, m)`` in float32
    (float64 for float64 slopes).

    Causal form ``m_h * (j - i)`` (non-positive for the visible keys j <= i); symmetric form
    ``-m_h * |j - i|``.
    """
    check_positions("relative", relative)
    check_tensor("relative", relative, ndim=3)
    check_float_tensor("slopes", slopes, ndim=1)
    check_bool("symmetric", symmetric)
    check_same_device(relative=relative, slopes=slopes)
    b, n, m = relative.shape
    check_fits("slopes", f"{len(slopes)} heads", (b, len(slopes), n, m), torch.float32, relative.device)
    work = arithmetic_dtype(slopes.dtype)  # float32, or float64 for float64 slopes
    distance = relative.to(work)
    if symmetric:
        distance = -distance.abs()
    return slopes.to(work).view(1, -1, 1, 1) * distance.unsqueeze(1)


@register(
    "alibi",
    paper="Press et al. 2021, arXiv:2108.12409",
    summary="A fixed per-head linear penalty on query-key distance added to the logits.",
)
class ALiBi(DerivedTablesMixin, BiasEncoding):
    """ALiBi biases for ``heads`` heads.

    Args:
        heads: number of attention heads.
        causal: the paper's causal form (True) or the symmetric encoder form ``-m |i - j|`` (False).

    Cache policy: for implicit positions the float32 ``(1, heads, L, L)`` bias is built once per
    length L (grown in steps of 256) and sliced, while it stays within four times the bias it serves
    (see :func:`~posenc.bias.relative.square_cache_length`); decoding against long keys, far offsets,
    explicit positions and ``torch.compile`` compute the bias directly. A bias larger than
    :data:`posenc.core.memory.MAX_TABLE_BYTES` raises ``ValueError`` before anything is allocated.
    Float64 queries (a float64 model) get a float64 bias from float64 slopes, computed directly.
    """

    model_arguments = ("heads", "causal")
    hooks = frozenset({"bias"})

    def __init__(self, heads: int, *, causal: bool = True, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.causal = check_bool("causal", causal)
        self._cache_len = 0
        check_table_fits({"heads": heads}, (heads,), torch.float64, device)
        check_table_fits({"heads": heads}, (heads, 4), torch.float64, "cpu")  # the slopes' host floats
        self.register_buffer("slopes", torch.empty(heads, device=device), persistent=False)
        self.register_buffer("bias_cached", torch.empty(1, heads, 0, 0, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        self.slopes = alibi_slopes(self.heads, device=device)
        positions = torch.arange(self._cache_len, device=device)
        rel = (positions.unsqueeze(0) - positions.unsqueeze(1)).unsqueeze(0)
        self.bias_cached = alibi_bias(rel, self.slopes, symmetric=not self.causal)

    def slopes_for(self, q: torch.Tensor | None) -> torch.Tensor:
        """The slopes for queries ``q``: the float32 buffer, or float64 ones for float64 queries (a
        float64 model's bias is float64; None, as in ``alibi(n, m)``, gives float32)."""
        if q is not None and q.dtype == torch.float64:
            return alibi_slopes(self.heads, dtype=torch.float64, device=self.slopes.device)
        return self.slopes

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        n, m = q_positions.n, k_positions.n
        batch = max(p.explicit.shape[0] if p.explicit is not None else 1 for p in (q_positions, k_positions))
        check_table_memory(lambda: f"the ALiBi bias (batch={batch}, heads={self.heads}, n={n}, m={m})", (batch, self.heads, n, m))
        slopes = self.slopes_for(q)
        window = implicit_window(q_positions, k_positions)
        if window is not None and not torch.compiler.is_compiling() and slopes is self.slopes:
            # implicit positions: built once per length, then sliced (a view, no work per call)
            length = square_cache_length(max(q_positions.end, k_positions.end), self._cache_len, n, m)
            if length is not None and fits((self.heads, length, length)):
                if length > self._cache_len:
                    self._cache_len = length
                    self.rebuild_tables(self.slopes.device)
                return self.bias_cached[:, :, window[0], window[1]]
        rel = relative_positions(q_positions, k_positions).to(self.slopes.device)
        return alibi_bias(rel, slopes, symmetric=not self.causal)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """``score + m_h (j - i)`` (causal) or ``score - m_h |j - i|``: for implicit positions in closed
        form from ``kv_idx - q_idx`` (compilable on CPU), else read from the positions."""
        symmetric = not self.causal
        slopes = self.slopes_for(q)
        gap = position_gap(q_positions, k_positions, self.slopes.device)
        if gap is not None:

            def closed(score, b, h, q_idx, kv_idx, slopes, gap):
                distance = (kv_idx - q_idx + gap).to(slopes.dtype)
                if symmetric:
                    distance = -distance.abs()
                return score + (slopes[h] * distance).to(score.dtype)

            return ScoreMod(closed, (slopes, gap), static=((0,), ()))
        qpos, kpos = position_tensors(q_positions, k_positions, q.shape[0], self.slopes.device)

        def fn(score, b, h, q_idx, kv_idx, slopes, qpos, kpos):
            distance = (kpos[b, kv_idx] - qpos[b, q_idx]).to(slopes.dtype)
            if symmetric:
                distance = -distance.abs()
            return score + (slopes[h] * distance).to(score.dtype)

        return ScoreMod(fn, (slopes, qpos, kpos))

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """For implicit positions: one value per diagonal ``(h, n + m - 1)``, read per block as a view."""
        n, m = q_positions.n, k_positions.n
        if not (q_positions.is_implicit and k_positions.is_implicit) or n == 0 or m == 0:
            return None
        gap = k_positions.offset - q_positions.offset
        slopes = self.slopes_for(q)
        distance = torch.arange(gap - n + 1, gap + m, device=self.slopes.device).to(slopes.dtype)  # j - i by diagonal
        if not self.causal:
            distance = -distance.abs()
        # causal: m_h * (j - i) is linear in j, so each block takes one added row (see diagonal_block_term)
        return diagonal_block_term(slopes.view(-1, 1) * distance, n, linear=self.causal)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, causal={self.causal}"
