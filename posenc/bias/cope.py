"""CoPE, contextual position encoding (Golovneva et al. 2024, arXiv:2405.18719).

Positions are counted by the content instead of by tokens. For query ``i`` each visible key ``t``
opens a gate ``g_it = sigmoid(q_i . k_t / sqrt(d))``; the position of key ``j`` relative to ``i`` is
the number of open gates between them (eq. 3), ``p_ij = sum_{t=j}^{i} g_it``, a real number. Each
integer position ``p`` has a learned embedding ``e[p]``, and a fractional one interpolates between
its neighbours (eq. 4-5); the logit gains ``q_i . e[p_ij]``, computed as the interpolation of the
``q_i . e[p]`` over integer ``p`` (the paper's cheap form). Positions are capped at
``max_positions - 1``. The paper's setting is causal; ``causal=False`` counts the gates between
the two tokens in either direction (posenc's encoder form). Verified against a float64 double loop in
``tests/bias/test_cope.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc.bias.relative import BiasEncoding
from posenc.core.memory import check_table_memory
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype, autocast_off
from posenc.core.registry import register
from posenc.core.terms import ScoreMod, gathered_bias_mod
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_float_tensor,
    check_int,
    check_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
)


def contextual_positions(q: torch.Tensor, k: torch.Tensor, *, max_positions: int, causal: bool = True) -> torch.Tensor:
    """q ``(b, h, n, d)``, k ``(b | 1, h | 1, m, d)`` (queries are the last ``n`` keys) -> ``p_ij`` ``(b, h, n, m)`` in float32
    (float64 where q or k is float64).

    The gates are ``g_ij = sigmoid(q_i . k_j / sqrt(d))``: scaled by ``1/sqrt(d)`` as in CoPE's reference
    code (the paper's equation writes ``sigmoid(q_i . k_j)``).
    Causal: ``p_ij = sum_{t=j}^{i} g_it``, and keys after a query get 0 (the causal mask hides them).
    Encoder form (posenc's extension; the paper is causal): the gates between the two tokens in
    either direction, ``sum_{t=min(i,j)}^{max(i,j)} g_it``. Positions are capped at ``max_positions - 1``.
    """
    check_float_tensor("q", q, ndim=4)
    check_float_tensor("k", k, ndim=4)
    check_int("max_positions", max_positions, minimum=2)
    check_bool("causal", causal)
    if k.shape[-1] != q.shape[-1] or any(a != b and b != 1 for a, b in zip(q.shape[:2], k.shape[:2])):
        raise ValueError(f"`k` must have shape (b, h, m, {q.shape[-1]}) matching `q` {tuple(q.shape)}, got {tuple(k.shape)}")
    check_same_device(q=q, k=k)
    n, m = q.shape[-2], k.shape[-2]
    if n > m:
        raise ValueError(f"`q` has {n} queries but `k` only {m} keys; the keys must include the queries")
    work = arithmetic_dtype(q.dtype, k.dtype)  # float32 or better
    b, h = q.shape[:2]
    what = lambda: f"the CoPE positions (batch={b}, heads={h}, n={n}, m={m})"
    check_table_memory(what, (b, h, n, m), bytes_per_entry=work.itemsize)
    with autocast_off(q.device):  # positions are counted in `work` inside a user's autocast region too
        gates = torch.sigmoid(q.to(work) @ k.to(work).transpose(-1, -2) / math.sqrt(q.shape[-1]))  # (b, h, n, m)
    if causal:
        visible = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
        # p_ij = sum over t = j .. i of g_it: a cumulative sum from the right
        positions = (gates * visible).flip(-1).cumsum(-1).flip(-1)
    else:
        cumulative = gates.cumsum(-1)  # C_t = sum_{s <= t} g_is
        own = torch.arange(m - n, m, device=q.device).view(1, 1, n, 1).expand(*gates.shape[:2], n, 1)
        at_query, gate_query = cumulative.gather(-1, own), gates.gather(-1, own)
        before = torch.arange(m, device=q.device).view(1, 1, 1, m) <= own
        positions = torch.where(before, at_query - cumulative + gates, cumulative - at_query + gate_query)
    return positions.clamp(max=max_positions - 1)


def interpolate_position_logits(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """logits ``(b, h, n, P)`` (``q . e[p]`` at integer ``p``), positions ``(b, h, n, m)`` in ``[0, P-1]`` -> ``(b, h, n, m)``."""
    check_float_tensor("logits", logits, ndim=4)
    if logits.shape[-1] < 1:
        raise ValueError(f"`logits` must hold at least one position (b, h, n, P >= 1), got shape {tuple(logits.shape)}")
    check_positions("positions", positions)
    if positions.ndim != 4 or positions.shape[:3] != logits.shape[:3]:
        raise ValueError(
            f"`positions` must have shape (b, h, n, m) with (b, h, n) = {tuple(logits.shape[:3])} of `logits`, "
            f"got {tuple(positions.shape)}"
        )
    check_same_device(logits=logits, positions=positions)
    top = logits.shape[-1] - 1
    if positions.numel() and can_read_values(positions) and (bool((positions < 0).any()) or bool((positions > top).any())):
        raise ValueError(f"`positions` must lie in [0, {top}] (the positions `logits` holds), got values outside")
    if not positions.is_floating_point():
        positions = positions.to(arithmetic_dtype(logits.dtype))
    floor = positions.floor()
    weight = positions - floor
    low = logits.gather(-1, floor.long())
    high = logits.gather(-1, positions.ceil().long())
    return low + weight * (high - low)


@register(
    "cope",
    paper="Golovneva et al. 2024, arXiv:2405.18719",
    summary="Positions counted by content (sums of sigmoid gates over keys), embedded by interpolation; a query-dependent bias.",
)
class ContextualPosition(BiasEncoding):
    """CoPE's query-dependent bias.

    Args:
        head_dim: width of each head (the position embeddings live in the query space).
        heads: attention heads (embeddings are shared across heads, as in the paper's code).
        max_positions: number of integer positions with an embedding (``npos_max``).
        causal: the paper's causal counting (True) or the encoder form (gates between the tokens).
    """

    model_arguments = ("heads", "head_dim", "causal")
    per_layer = True

    def __init__(self, head_dim: int, heads: int, *, max_positions: int = 64, causal: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.causal = check_bool("causal", causal)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.heads = check_positive_int("heads", heads)
        self.max_positions = check_int("max_positions", max_positions, minimum=2)
        sizes = {"max_positions": max_positions, "head_dim": head_dim}
        check_table_fits(sizes, (head_dim, max_positions), dtype, device)
        self.embeddings = nn.Parameter(torch.empty(head_dim, max_positions, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embeddings, std=self.head_dim**-0.5)

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        # checked here, the hook every attention path calls, not only in forward
        if q.shape[-1] != self.head_dim:
            raise ValueError(f"`q` must have head width {self.head_dim}, got shape {tuple(q.shape)}")
        positions = contextual_positions(q, k, max_positions=self.max_positions, causal=self.causal)
        # float32 arithmetic, float64 where the queries or the embeddings are float64
        work = arithmetic_dtype(q.dtype, self.embeddings.dtype)
        logits = q.to(work) @ self.embeddings.to(work)  # (b, h, n, P)
        return interpolate_position_logits(logits, positions)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The ``(b, h, n, m)`` bias for queries ``q`` (the last ``n`` of the keys) and keys ``k``."""
        check_float_tensor("q", q, ndim=4)
        check_float_tensor("k", k, ndim=4)
        return self.score_bias(q, k, q_positions=Positions(q.shape[-2]), k_positions=Positions(k.shape[-2]))

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """The materialised bias, gathered by ``[b, h, q_idx, kv_idx]`` (it has no per-offset form)."""
        return gathered_bias_mod(self.score_bias(q, k, q_positions=q_positions, k_positions=k_positions), q.shape[0])

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, heads={self.heads}, max_positions={self.max_positions}, causal={self.causal}"
