"""Transformer-XL relative attention (Dai et al. 2019, arXiv:1901.02860, section 3.3).

The logit between query i and key j is the sum of four terms (equation 4 of the paper)::

    (a) q_i . k_j   (b) q_i . W_R R_{i-j}   (c) u . k_j   (d) v . W_R R_{i-j}

with ``R`` the sinusoidal table of the distance ``i - j`` (sines then cosines, as in the official
code), ``W_R`` its own key projection and ``u``, ``v`` learned per-head content and position biases.
Term (a) is ordinary attention; (b)-(d) enter through the ``"bias"`` hook, divided by ``sqrt(d)``
like (a). Terms (b) + (d) are one product ``(q_i + v) . W_R R`` against a table of distances, then
re-indexed by key with :func:`posenc.relative.rel_shift.rel_shift`. Bidirectional attention and
non-aligned implicit positions use a table of ``n + m - 1`` distances so every pair is covered;
explicit positions gather by distance instead, on every backend from the ``(b, h, n, w)`` scores of
every query at the ``w`` distances the positions span (``w`` up to twice the longest packed document:
its memory grows with n times that length), and float positions fall back to a per-pair table,
``O(n m d)`` memory. ``u`` and ``v`` belong to each block (the official code's ``untie_r=True``).
For implicit positions, :meth:`TransformerXLRelative.block_bias` gives terms (b)-(d) one block of
query rows at a time (one product against the distances the block covers), so the blocked kernel of
:mod:`posenc.attention` holds no ``(n, m)`` bias; :meth:`TransformerXLRelative.score_mod` gives them
to FlexAttention over the ``(b, h, n, n + m - 1)`` position scores of every query at every distance
(a table larger than an ``(n, m)`` bias: use the blocked kernel for long contexts).

Verified against a float64 per-(i, j) transcription of the four terms in
tests/relative/test_transformer_xl.py; the segment-level recurrence lives in
:mod:`posenc.relative.xl_model`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from posenc.bias.relative import position_tensors, relative_positions
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.tables import building_tables
from posenc.core.terms import BlockTerm, ScoreMod
from posenc.core.validation import (
    check_bool,
    check_even,
    check_float,
    check_float_tensor,
    check_layers_fit,
    check_positions,
    check_positive_int,
    check_same_device,
)
from posenc.input.sinusoidal import sinusoidal
from posenc.relative.rel_shift import shift_padded, skew


def relative_sinusoid(distances: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Transformer-XL's ``R``: ``(*p,)`` distances -> ``(*p, dim)``, sines then cosines; float64 for
    float64 distances, else float32."""
    check_positions("distances", distances)  # named here: sinusoidal would call them `positions`
    return sinusoidal(distances, dim, base=base, interleaved=False)


@functools.lru_cache(maxsize=32)
def _descending_sinusoid(
    high: int, width: int, dim: int, base: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``R`` ``(width, dim)`` in ``dtype`` for distances ``high, high - 1, .., high - width + 1`` (float64
    angles for a float64 ``dtype``); cached, an ordinary tensor even when first built under inference mode."""
    with building_tables():
        distances = torch.arange(high, high - width, -1, device=device)
        if dtype == torch.float64:
            distances = distances.double()
        return relative_sinusoid(distances, dim, base=base).to(dtype)


@register(
    "transformer_xl",
    paper="Dai et al. 2019, arXiv:1901.02860",
    summary="Sinusoidal relative table with its own key projection and global biases u, v (terms (b)-(d)).",
)
class TransformerXLRelative(PositionEncoding):
    """Terms (b)-(d) of Transformer-XL attention as a score bias, one instance per block.

    Args:
        dim: model width, the width of the sinusoidal table ``R``; even.
        heads, head_dim: attention shape; ``W_R`` maps ``dim -> heads * head_dim``.
        causal: queries only see keys at or before them (uses the paper's ``m``-row table).
        base: wavelength base of ``R`` (10000 in the paper).
    """

    model_arguments = ("dim", "heads", "head_dim", "causal")
    hooks = frozenset({"bias"})
    per_layer = True

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        *,
        causal: bool = False,
        base: float = 10000.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_even("dim", dim)
        self.heads = check_positive_int("heads", heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.causal = check_bool("causal", causal)
        self.base = check_float("base", base, positive=True)
        check_layers_fit({"dim": dim, "heads": heads, "head_dim": head_dim}, (dim + 2) * heads * head_dim, dtype, device)
        self.w_r = nn.Linear(dim, heads * head_dim, bias=False, device=device, dtype=dtype)
        self.u = nn.Parameter(torch.zeros(heads, head_dim, device=device, dtype=dtype))
        self.v = nn.Parameter(torch.zeros(heads, head_dim, device=device, dtype=dtype))
        if self.u.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """The global biases u, v (after ``w_r``'s own initialisation; see :mod:`posenc.core.meta`)."""
        nn.init.normal_(self.u, std=0.02)
        nn.init.normal_(self.v, std=0.02)

    def projected(self, distances: torch.Tensor) -> torch.Tensor:
        """``W_R R_d`` for distances ``(*p,)`` -> ``(*p, heads, head_dim)``."""
        if self.w_r.weight.dtype == torch.float64:
            distances = distances.double()  # a float64 model gets a float64 table
        r = relative_sinusoid(distances, self.dim, base=self.base).to(self.w_r.weight.dtype)
        return self.w_r(r).unflatten(-1, (self.heads, self.head_dim))

    def position_scores(self, q: torch.Tensor, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """Terms (b) + (d), unscaled: q ``(b, h, n, d)`` -> ``(b | 1, h, n, m)``."""
        return self._position_scores(q + self.v.to(q.dtype)[:, None], q_positions, k_positions)

    def _position_scores(self, qv: torch.Tensor, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """``qv_i . W_R R_{i-j}`` for ``qv = q + v`` (any scale) ``(b, h, n, d)`` -> ``(b | 1, h, n, m)``."""
        n, m = q_positions.n, k_positions.n
        if n == 0 or m == 0:  # no queries or no keys: an empty (b, h, n, m) score
            return qv.new_zeros(qv.shape[0], self.heads, n, m)
        if q_positions.is_implicit and k_positions.is_implicit:
            gap = q_positions.offset - k_positions.offset  # position of query 0 minus that of key 0
            # the paper's m distances suffice when causal queries are the last n keys; else n + m - 1
            width = m if self.causal and gap == m - n else n + m - 1
            shift = gap - (width - n)
            distances = torch.arange(width - 1, -1, -1, device=qv.device) + shift
            table = self.projected(distances).to(qv.dtype)  # (width, h, d)
            # (width, h, d) -> (h, d, 1 + width) with a zero first column: the product then comes out
            # already padded the way the relative shift needs, without a copy of the scores
            table = F.pad(table.permute(1, 2, 0), (1, 0))
            # (b, h, n, d) @ (h, d, 1 + width) -> (b, h, n, 1 + width): column 1 + c is distance
            # width - 1 - c + shift
            return shift_padded(torch.matmul(qv, table))[..., :m]
        rel = -relative_positions(q_positions, k_positions).to(qv.device)  # (b | 1, n, m): i - j
        if rel.is_floating_point() or rel.device.type == "meta" or torch.compiler.is_compiling():
            # fractional distances, or distances whose range cannot be read here (the meta device, a
            # traced graph): one table row per pair
            table = self.projected(rel).to(qv.dtype)  # (b | 1, n, m, h, d)
            return torch.einsum("bhnd,bnmhd->bhnm", qv, table)
        low, high = int(rel.min()), int(rel.max())
        table = self.projected(torch.arange(low, high + 1, device=qv.device)).to(qv.dtype)
        scores = torch.einsum("bhnd,whd->bhnw", qv, table)  # (b, h, n, distances)
        b, h = scores.shape[:2]
        return scores.gather(-1, (rel - low).unsqueeze(1).expand(b, h, n, m))

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """q ``(b, h, n, d)``, k ``(b, h, m, d)`` -> ``((b) + (c) + (d)) / sqrt(d)``, ``(b, h, n, m)``."""
        for name, t in (("q", q), ("k", k)):
            check_float_tensor(name, t, ndim=4)
            if t.shape[1] != self.heads or t.shape[-1] != self.head_dim:
                raise ValueError(
                    f"`{name}` must have shape (b, heads={self.heads}, n, head_dim={self.head_dim}), "
                    f"got {tuple(t.shape)}"
                )
        check_same_device(q=q, k=k, u=self.u)
        # 1/sqrt(d) applied to the (b, h, n | m, d) factors, not to the (b, h, n, m) scores
        scale = 1.0 / math.sqrt(self.head_dim)
        content = torch.matmul(k, self.u.to(k.dtype)[:, :, None] * scale).transpose(-1, -2)  # (c): (b, h, 1, m)
        return self._position_scores(self._scaled_query(q), q_positions, k_positions) + content

    def _scaled_query(self, q: torch.Tensor) -> torch.Tensor:
        """``(q + v) / sqrt(d)``, ``(b, h, n, d)``: the query side of terms (b) + (d)."""
        return (q + self.v.to(q.dtype)[:, None]) * (1.0 / math.sqrt(self.head_dim))

    def _factors(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q + v) / sqrt(d)`` ``(b, h, n, d)`` and term (c) ``u . k_j / sqrt(d)`` ``(b, h, 1, m)``."""
        scale = 1.0 / math.sqrt(self.head_dim)
        qv = self._scaled_query(q)
        # (b, h, m, d) . (h, 1, d) summed over d: a product with one column runs as a slow batched matmul
        content = (k * (self.u.to(k.dtype) * scale)[:, None]).sum(-1).unsqueeze(-2)
        return qv, content

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod | None:
        """Terms (b)-(d) as a score_mod over a ``(b, h, n, distances)`` table of position scores and the
        ``(b, h, 1, m)`` content term (integer positions; None for float ones)."""
        qpos, kpos = position_tensors(q_positions, k_positions, q.shape[0], q.device)
        if qpos.is_floating_point() or kpos.is_floating_point() or q_positions.n == 0 or k_positions.n == 0:
            return None
        if q_positions.is_implicit and k_positions.is_implicit:
            low = q_positions.offset - (k_positions.end - 1)
            high = q_positions.end - 1 - k_positions.offset
        else:
            low, high = int(qpos.min() - kpos.max()), int(qpos.max() - kpos.min())
        qv, content = self._factors(q, k)
        table = self.projected(torch.arange(low, high + 1, device=q.device)).to(q.dtype)  # (w, h, d)
        scores = torch.einsum("bhnd,whd->bhnw", qv, table)  # (b, h, n, w): distance low + w
        low_t = torch.tensor(low, device=q.device)

        def fn(score, b, h, q_idx, kv_idx, scores, content, qpos, kpos, low):
            distance = qpos[b, q_idx] - kpos[b, kv_idx] - low
            return score + (scores[b, h, q_idx, distance] + content[b, h, 0, kv_idx]).to(score.dtype)

        return ScoreMod(fn, (scores, content, qpos, kpos, low_t))

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        """Terms (b)-(d) one block at a time for implicit positions (None for explicit ones): one
        product of the block's ``(rows, d)`` queries with the distances it covers, no ``(n, m)`` table.

        A causal encoding whose queries are the last n of the m keys (the case :meth:`score_bias`
        also assumes causal masking for) multiplies each block with the ``keys + 1`` distances
        ``keys .. 0`` and re-indexes the product by key with :func:`shift_padded`: exact wherever the
        causal mask lets a query see the key, neighbouring rows' values where it hides it. Any other
        case multiplies with the ``rows + keys - 1`` distances of the block and reads them along the
        diagonals (:func:`skew`), exact everywhere.

        Term (c) is the term's ``query_shift`` ``u``: the kernel adds it to the queries of its own
        ``q k^T`` product, so the blocks compute (b) + (d) only.
        """
        n, m = q_positions.n, k_positions.n
        if not (q_positions.is_implicit and k_positions.is_implicit) or n == 0 or m == 0:
            return None
        qv = self._scaled_query(q)
        gap = q_positions.offset - k_positions.offset  # position of query 0 minus that of key 0
        # term (c), u . k_j / sqrt(d), rides on the kernel's own product as (q + u) . k_j / sqrt(d)
        if self.causal and gap == m - n:
            return self._causal_block_term(qv, n, m, gap)._replace(query_shift=self.u)
        return self._diagonal_block_term(qv, n, m, gap)._replace(query_shift=self.u)

    def _table(self, high: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """``W_R R`` for distances ``high, high - 1, .., high - width + 1`` as ``(h, d, width)``."""
        weight = self.w_r.weight
        if torch.compiler.is_compiling() or weight.device.type == "meta":
            r = _descending_sinusoid.__wrapped__(high, width, self.dim, self.base, weight.dtype, weight.device)
        else:  # the same rows every step: R is built once per length, not from sines and cosines each call
            r = _descending_sinusoid(high, width, self.dim, self.base, weight.dtype, weight.device)
        table = self.w_r(r).unflatten(-1, (self.heads, self.head_dim)).to(like.dtype)
        return table.permute(1, 2, 0).contiguous()

    def _causal_block_term(self, qv, n: int, m: int, gap: int) -> BlockTerm:
        # column t of the table holds distance m - t (m .. 0); a block of rows s:e and keys k0:k1
        # reads the keys + 1 distances e + gap - k0 .. e + gap - k1 (columns first .. first + keys),
        # the largest one only as the zero-padding place of the shift (it lands on hidden entries)
        table = self._table(m, m + 1, qv)
        b, h, _, d = qv.shape
        # head-major (h, b, n, d): a block's queries of one head are one (b * rows, d) matrix, so its
        # products with the head's (d, keys + 1) columns need no copy of the columns per batch row
        qv = qv.transpose(0, 1).contiguous()

        def columns(s, e, k0, k1):
            keys = min(k1, e + gap) - k0  # keys past the causal limit take no term (masked)
            return keys, m - (e + gap - k0)

        def queries(qv, s, e):
            return qv[:, :, s:e].reshape(h, b * (e - s), d)  # (h, b * rows, d)

        def product(s, e, k0, k1, qv, table):
            keys, first = columns(s, e, k0, k1)
            # (h, b * rows, d) @ (h, d, keys + 1) -> (h, b, rows, keys + 1) -> by key (b, h, rows, keys)
            by_distance = torch.bmm(queries(qv, s, e), table[..., first : first + keys + 1])
            return shift_padded(by_distance.view(h, b, e - s, keys + 1)).transpose(0, 1), keys

        def fn(s, e, k0, k1, qv, table):
            scores, keys = product(s, e, k0, k1, qv, table)
            return F.pad(scores, (0, k1 - k0 - keys)) if keys < k1 - k0 else scores

        def add(logits, s, e, k0, k1, qv, table):
            scores, keys = product(s, e, k0, k1, qv, table)
            logits[..., :keys].add_(scores)

        def backward(grad, s, e, k0, k1, tensors, grads):
            qv, table = tensors
            grad_qv, grad_table = grads
            if grad_qv is None and grad_table is None:
                return
            rows = e - s
            keys, first = columns(s, e, k0, k1)
            # the shift's adjoint: it reads the padded product's flat entries from `rows` on, in order
            grad_padded = grad.new_empty(h, b, rows * (keys + 1))
            grad_padded[..., :rows].zero_()
            grad_padded[..., rows:].view(h, b, rows, keys).copy_(grad[..., :keys].transpose(0, 1))
            grad_padded = grad_padded.view(h, b * rows, keys + 1)
            if grad_qv is not None:
                cols = table[..., first : first + keys + 1]  # (h, d, keys + 1)
                grad_qv[:, :, s:e] += torch.bmm(grad_padded, cols.transpose(-1, -2)).view(h, b, rows, d)
            if grad_table is not None:
                # (h, d, b * rows) @ (h, b * rows, keys + 1): the batch summed inside the product
                grad_table[..., first : first + keys + 1] += torch.bmm(queries(qv, s, e).transpose(-1, -2), grad_padded)

        return BlockTerm(fn, (qv, table), backward, add)

    def _diagonal_block_term(self, qv, n: int, m: int, gap: int) -> BlockTerm:
        # column t of the table holds distance top - t, top = n - 1 + gap the largest (query n - 1
        # to key 0); a block's bottom-left entry (query e - 1, key k0) sits in column n - e + k0
        table = self._table(n - 1 + gap, n + m - 1, qv)

        def product(s, e, k0, k1, qv, table):
            rows, keys = e - s, k1 - k0
            first = n - e + k0
            # column c of the block's product holds key - query = c - (rows - 1) in block indices
            return skew(torch.matmul(qv[..., s:e, :], table[..., first : first + rows + keys - 1]), rows, keys)

        def fn(s, e, k0, k1, qv, table):
            return product(s, e, k0, k1, qv, table)

        def add(logits, s, e, k0, k1, qv, table):
            logits.add_(product(s, e, k0, k1, qv, table))

        def backward(grad, s, e, k0, k1, tensors, grads):
            qv, table = tensors
            grad_qv, grad_table = grads
            rows, keys = e - s, k1 - k0
            first = n - e + k0
            if grad_qv is None and grad_table is None:
                return
            # the skew's adjoint: the block's logit gradients laid out by diagonal, zeros elsewhere
            by_diagonal = grad.new_zeros(*grad.shape[:2], rows, rows + keys - 1)
            skew(by_diagonal, rows, keys).copy_(grad)
            columns = table[..., first : first + rows + keys - 1]  # (h, d, rows + keys - 1)
            if grad_qv is not None:
                grad_qv[..., s:e, :] += torch.matmul(by_diagonal, columns.transpose(-1, -2))
            if grad_table is not None:
                # (b, h, d, rows) @ (b, h, rows, rows + keys - 1), summed over the batch
                grad_table[..., first : first + rows + keys - 1] += torch.matmul(
                    qv[..., s:e, :].transpose(-1, -2), by_diagonal
                ).sum(0)

        return BlockTerm(fn, (qv, table), backward, add)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, head_dim={self.head_dim}, causal={self.causal}, base={self.base}"
