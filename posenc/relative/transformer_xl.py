"""Transformer-XL relative attention (Dai et al. 2019, arXiv:1901.02860, section 3.3).

The logit between query i and key j is the sum of four terms (equation 4 of the paper)::

    (a) q_i . k_j   (b) q_i . W_R R_{i-j}   (c) u . k_j   (d) v . W_R R_{i-j}

with ``R`` the sinusoidal table of the distance ``i - j`` (sines then cosines, as in the official
code), ``W_R`` its own key projection and ``u``, ``v`` learned per-head content and position biases.
Term (a) is ordinary attention; (b)-(d) enter through the ``"bias"`` hook, divided by ``sqrt(d)``
like (a). Terms (b) + (d) are one product ``(q_i + v) . W_R R`` against a table of distances, then
re-indexed by key with :func:`posenc.relative.rel_shift.rel_shift`. Bidirectional attention and
non-aligned implicit positions use a table of ``n + m - 1`` distances so every pair is covered;
explicit positions gather by distance instead (float positions fall back to a per-pair table,
``O(n m d)`` memory). ``u`` and ``v`` belong to each block (the official code's ``untie_r=True``).
For a causal encoding with implicit positions, :meth:`TransformerXLRelative.fused_attention` does
terms (a)-(d) and the softmax in one autograd node, in blocks of query rows that skip the masked
triangle in both products and hold no ``(n, m)`` bias (float64 ``gradcheck`` in the tests).

Verified against a float64 per-(i, j) transcription of the four terms in
tests/relative/test_transformer_xl.py; the segment-level recurrence lives in
:mod:`posenc.relative.xl_model`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from posenc.bias.fused import _row_blocks
from posenc.bias.relative import relative_positions
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.validation import check_even, check_float, check_float_tensor, check_positive_int, check_same_device
from posenc.input.sinusoidal import sinusoidal
from posenc.relative.rel_shift import shift_padded


def relative_sinusoid(distances: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Transformer-XL's ``R``: ``(*p,)`` distances -> ``(*p, dim)``, sines then cosines; float64 for
    float64 distances, else float32."""
    return sinusoidal(distances, dim, base=base, interleaved=False)


class _CausalXLAttention(torch.autograd.Function):
    """Causal Transformer-XL attention in blocks of query rows, the queries being the last n of the m
    keys: logits ``((q_i + u) . k_j + (q_i + v) . table[i + m - n - j]) * scale``, with ``table``
    ``(m, h, d)`` holding ``W_R R`` for distances ``m - 1 .. 0`` (largest first).

    A block of rows ``s:e`` sees ``e + m - n`` keys and distances, so both products skip the masked
    triangle, and the position scores are shifted into place per block (no ``(n, m)`` bias is held).
    """

    @staticmethod
    def forward(ctx, q, k, v, u, vb, table, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        n, m = q.shape[-2], k.shape[-2]
        qu, qv = q + u[:, None], q + vb[:, None]  # (b, h, n, d)
        # (m, h, d) -> (h, d, 1 + m) with a zero first column: products come out padded for the shift
        padded_table = F.pad(table.permute(1, 2, 0), (1, 0))
        blocks = _row_blocks(n, m, True)
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        weights = []
        for s, e, keys in blocks:
            rows = e - s
            logits = torch.matmul(qu[..., s:e, :], k[..., :keys, :].transpose(-1, -2))
            # distances keys - 1 .. 0 are the last keys columns; column 0 of the block's table is zero
            block_table = torch.cat((padded_table[..., :1], padded_table[..., 1 + m - keys :]), dim=-1)
            logits += shift_padded(torch.matmul(qv[..., s:e, :], block_table))
            logits.mul_(scale)
            hidden = torch.ones(rows, rows, dtype=torch.bool, device=q.device).triu_(1)
            logits[..., keys - rows :].masked_fill_(hidden, float("-inf"))
            w = torch.softmax(logits, dim=-1)
            del logits
            out[..., s:e, :] = torch.matmul(w, v[..., :keys, :])
            weights.append(w)
        ctx.save_for_backward(qu, qv, k, v, padded_table, out, *weights)
        ctx.blocks, ctx.scale = blocks, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        qu, qv, k, v, padded_table, out, *weights = ctx.saved_tensors
        n, m, scale = qu.shape[-2], k.shape[-2], ctx.scale
        grad = grad.contiguous()
        grad_qu, grad_qv = torch.empty_like(qu), torch.empty_like(qv)
        grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v)
        grad_table = torch.zeros_like(padded_table)  # (h, d, 1 + m)
        delta = (grad * out).sum(-1, keepdim=True)
        for (s, e, keys), w in zip(ctx.blocks, weights):
            rows = e - s
            g = grad[..., s:e, :]
            grad_v[..., :keys, :] += torch.matmul(w.transpose(-1, -2), g)
            grad_w = torch.matmul(g, v[..., :keys, :].transpose(-1, -2))
            grad_logits = grad_w.sub_(delta[..., s:e, :]).mul_(w).mul_(scale)  # (b, h, rows, keys)
            grad_qu[..., s:e, :] = torch.matmul(grad_logits, k[..., :keys, :])
            grad_k[..., :keys, :] += torch.matmul(grad_logits.transpose(-1, -2), qu[..., s:e, :])
            # the shift reads the last rows * keys entries of the padded scores: its adjoint writes them
            grad_padded = grad_logits.new_empty(*grad_logits.shape[:-1], keys + 1)
            flat = grad_padded.flatten(-2)
            flat[..., :rows] = 0
            flat[..., rows:] = grad_logits.flatten(-2)
            block_table = torch.cat((padded_table[..., :1], padded_table[..., 1 + m - keys :]), dim=-1)
            grad_qv[..., s:e, :] = torch.matmul(grad_padded, block_table.transpose(-1, -2))
            # (b, h, d, rows) @ (b, h, rows, 1 + keys) summed over the batch -> (h, d, 1 + keys)
            block_grad = torch.matmul(qv[..., s:e, :].transpose(-1, -2), grad_padded).sum(0)
            grad_table[..., 1 + m - keys :] += block_grad[..., 1:]
        grad_u = grad_qu.sum((0, 2))
        grad_vb = grad_qv.sum((0, 2))
        grad_q = grad_qu.add_(grad_qv)
        return grad_q, grad_k, grad_v, grad_u, grad_vb, grad_table[..., 1:].permute(2, 0, 1), None


@register(
    "transformer_xl",
    family="relative",
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

    family = "relative"
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
        self.causal = bool(causal)
        self.base = check_float("base", base, positive=True)
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
        if rel.is_floating_point():
            # fractional distances: one table row per pair
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
        qv = (q + self.v.to(q.dtype)[:, None]) * scale
        content = torch.matmul(k, self.u.to(k.dtype)[:, :, None] * scale).transpose(-1, -2)  # (c): (b, h, 1, m)
        return self._position_scores(qv, q_positions, k_positions) + content

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
        """Terms (a)-(d) and the attention in one node, ``(b, h, n, head_dim)``, for a causal encoding
        on CPU whose implicit queries are the last n of the m keys (None otherwise: the caller then adds
        :meth:`score_bias` to ordinary attention). ``causal`` hides keys ``j > i + m - n``."""
        n, m = q_positions.n, k_positions.n
        if not (self.causal and causal and q_positions.is_implicit and k_positions.is_implicit and n > 0):
            return None
        if q_positions.offset - k_positions.offset != m - n or q.dtype not in (torch.float32, torch.float64):
            return None
        if q.device.type != "cpu":  # elsewhere sdpa's fused kernels take the bias and its gradient
            return None
        table = self.projected(torch.arange(m - 1, -1, -1, device=q.device)).to(q.dtype)  # (m, h, d)
        scale = 1.0 / math.sqrt(self.head_dim)
        return _CausalXLAttention.apply(q, k, v, self.u.to(q.dtype), self.v.to(q.dtype), table, scale)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, head_dim={self.head_dim}, causal={self.causal}, base={self.base}"
