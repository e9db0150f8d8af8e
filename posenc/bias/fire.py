"""FIRE, functional interpolation for relative positions (Li et al. 2023, arXiv:2310.04418).

A learned function of the *normalised* relative distance gives each head's logit bias (eq. 5-6):

    b(i, j) = f_theta( psi(i - j) / psi(max(L, i)) ),     psi(x) = log(c x + 1)

with ``f_theta`` an MLP (``Linear(1, hidden) -> ReLU -> Linear(hidden, heads)``), ``c > 0`` and
the threshold ``L > 0`` learned. Dividing by ``psi(i)`` maps every query's past into ``[0, 1]``
("progressive interpolation"), so a longer sequence is seen through the same input range instead of
unseen distances; ``L`` keeps short prefixes from being stretched. ``c`` and ``L`` enter through
their absolute values (the paper constrains them positive). FIRE is defined for causal attention
(``i >= j``); the encoder form here reads ``|i - j|``. Verified against a float64 transcription in
``tests/bias/test_fire.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posenc.bias.relative import BiasEncoding, relative_positions
from posenc.core.memory import check_table_memory
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.terms import BlockTerm, ScoreMod, gathered_bias_mod
from posenc.core.validation import (
    check_bool,
    check_broadcasts,
    check_finite,
    check_float,
    check_float_tensor,
    check_layers_fit,
    check_nonnegative_positions,
    check_positions,
    check_positive_int,
    check_same_device,
)


def fire_input(
    distance: torch.Tensor, query_position: torch.Tensor, c: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """FIRE's MLP input ``psi(distance) / psi(max(threshold, query_position))``, ``psi(x) = log(|c| x + 1)``.

    distance: ``(..., n, m)`` >= 0; query_position: broadcastable to it (``(..., n, 1)``); c, threshold:
    finite 0-dim tensors. Computed and returned in float32 or better (float64 where any argument is float64),
    whatever the dtype of ``c`` and ``threshold`` (a bf16 model's parameters).
    """
    check_nonnegative_positions("distance", distance)
    check_positions("query_position", query_position)
    check_broadcasts("query_position", query_position, tuple(distance.shape), to="distance")
    check_float_tensor("c", c, ndim=0)  # one c and one L per FIRE module (scalars)
    check_float_tensor("threshold", threshold, ndim=0)
    check_finite("c", c)  # a NaN c gives a NaN input, an infinite one NaN at distance 0 (inf * 0)
    check_finite("threshold", threshold)  # an infinite one, an input of 0 everywhere
    check_same_device(distance=distance, query_position=query_position, c=c, threshold=threshold)
    return _fire_ratio(distance, query_position, c, threshold)


def _fire_ratio(
    distance: torch.Tensor, query_position: torch.Tensor, c: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """:func:`fire_input` without its checks (arguments already checked once per call)."""
    work = arithmetic_dtype(*(t.dtype for t in (distance, query_position, c, threshold) if t.is_floating_point()))
    distance, query_position, c, threshold = (t.to(work) for t in (distance, query_position, c, threshold))
    c = c.abs()
    numerator = torch.log1p(c * distance)
    denominator = torch.log1p(c * torch.maximum(threshold.abs(), query_position))
    return numerator / denominator.clamp(min=torch.finfo(numerator.dtype).tiny)


@register(
    "fire",
    paper="Li et al. 2023, arXiv:2310.04418",
    summary="An MLP of the log distance normalised by the query position (learned c and threshold L) as a bias.",
)
class FIRE(BiasEncoding):
    """FIRE's learned bias.

    Args:
        heads: attention heads.
        hidden: width of the MLP (32 in the paper).
        init_c: initial ``c`` of ``psi(x) = log(c x + 1)``.
        init_threshold: initial ``L``.
        causal: causal distances ``i - j`` (True, the paper's setting) or ``|i - j|``.
    """

    model_arguments = ("heads", "causal")

    def __init__(
        self,
        heads: int,
        *,
        hidden: int = 32,
        init_c: float = 0.1,
        init_threshold: float = 512.0,
        causal: bool = True,
        device=None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.hidden = check_positive_int("hidden", hidden)
        self.init_c = check_float("init_c", init_c, positive=True)
        self.init_threshold = check_float("init_threshold", init_threshold, positive=True)
        self.causal = check_bool("causal", causal)
        check_layers_fit({"hidden": hidden, "heads": heads}, hidden * (heads + 2) + heads, dtype, device)
        self.mlp = nn.Sequential(
            nn.Linear(1, hidden, device=device, dtype=dtype), nn.ReLU(), nn.Linear(hidden, heads, device=device, dtype=dtype)
        )
        self.c = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.threshold = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.c.fill_(self.init_c)
            self.threshold.fill_(self.init_threshold)

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        weight = self.mlp[0].weight
        work = arithmetic_dtype(weight.dtype)  # float32, or float64 for float64 parameters
        # the MLP runs on every query-key pair: its hidden layer is the largest table built here
        n, m = q_positions.n, k_positions.n
        batch = max(p.explicit.shape[0] if p.explicit is not None else 1 for p in (q_positions, k_positions))
        width = max(self.hidden, self.heads)
        what = lambda: f"the FIRE MLP's activations (batch={batch}, n={n}, m={m}, hidden={self.hidden}, heads={self.heads})"
        check_table_memory(what, (batch, n, m, width), bytes_per_entry=max(weight.element_size(), work.itemsize))
        rel = relative_positions(q_positions, k_positions).to(device=weight.device, dtype=work)  # (b|1, n, m)
        distance = (-rel).clamp(min=0) if self.causal else rel.abs()
        query = q_positions.tensor(weight.device).to(work).unsqueeze(-1)  # (b | 1, n, 1)
        x = fire_input(distance, query, self.c.to(work), self.threshold.to(work))
        # (b | 1, n, m, 1) -> (b | 1, n, m, heads) -> (b | 1, heads, n, m)
        return self.mlp(x.unsqueeze(-1).to(weight.dtype)).to(work).permute(0, 3, 1, 2)

    def block_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> BlockTerm:
        """The bias of one block of the blocked kernel: the MLP runs on the block's ``(rows, keys)``
        pairs only, so the kernel holds neither the ``(n, m)`` bias nor the MLP's ``(n, m, hidden)``
        activations (its memory stays linear in n without gradients)."""
        weight = self.mlp[0].weight
        work = arithmetic_dtype(weight.dtype)  # float32, or float64 for float64 parameters
        qpos, kpos = q_positions.tensor(weight.device), k_positions.tensor(weight.device)  # (b | 1, n), (b | 1, m)
        for name, positions in (("q_positions", qpos), ("k_positions", kpos)):
            check_positions(name, positions)
        causal, dtype = self.causal, weight.dtype

        def fn(s, e, k0, k1, w1, b1, w2, b2, c, threshold):
            # key - query positions (exact in the positions' own dtype), then FIRE's input, as score_bias
            rel = (kpos[:, None, k0:k1] - qpos[:, s:e, None]).to(work)  # (b | 1, rows, keys)
            distance = (-rel).clamp(min=0) if causal else rel.abs()
            query = qpos[:, s:e, None].to(work)
            x = _fire_ratio(distance, query, c, threshold).unsqueeze(-1).to(dtype)
            # the MLP in the parameters' dtype, as score_bias runs it (the tensors travel in `work`):
            # Linear(1, hidden) -> ReLU -> Linear(hidden, heads), (b | 1, rows, keys, heads) -> (b | 1, heads, rows, keys)
            hidden = F.relu(F.linear(x, w1.to(dtype), b1.to(dtype)))
            return F.linear(hidden, w2.to(dtype), b2.to(dtype)).to(work).permute(0, 3, 1, 2)

        first, last = self.mlp[0], self.mlp[2]
        tensors = (first.weight, first.bias, last.weight, last.bias, self.c, self.threshold)
        return BlockTerm(fn, tuple(t.to(work) for t in tensors))

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """The materialised bias, gathered by ``[b, h, q_idx, kv_idx]`` (it has no per-offset form)."""
        return gathered_bias_mod(self.score_bias(q, k, q_positions=q_positions, k_positions=k_positions), q.shape[0])

    def extra_repr(self) -> str:
        return f"heads={self.heads}, hidden={self.hidden}, causal={self.causal}"
