"""The Forgetting Transformer's forget gate as a data-dependent decay bias (FoX; Lin et al. 2025,
arXiv:2503.02130).

Each token ``t`` gets a scalar forget gate per head, ``f_t = sigmoid(w_h . x_t + b_h)``, and the
logit of query ``i`` and key ``j <= i`` gains the log of the gates in between (eq. 4-5):

    D_ij = sum_{l = j+1}^{i} log f_l = c_i - c_j,      c_t = sum_{l <= t} log f_l

a learned, content-dependent generalisation of ALiBi (a constant gate is ALiBi with slope
``-log f``). The bias hook sees queries and keys, not the block input, so the gate here reads each
token's *key* vector (a linear function of ``x_t`` through ``W_k``): ``f_t = sigmoid(w_h . k_t + b_h)``.
Queries are the last ``n`` of the ``m`` keys (self-attention, with or without a key/value cache).
``b_h`` starts at ``init_bias`` (gates near 1, slow decay). Verified against a float64 double sum in
``tests/bias/test_fox.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posenc.bias.relative import BiasEncoding
from posenc.core.memory import check_table_memory
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.terms import ScoreMod
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_float,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_table_fits,
)


def forget_gate_bias(log_gates: torch.Tensor, n: int, *, causal: bool = True) -> torch.Tensor:
    """log_gates ``(b, h, m)`` (``log f_t <= 0`` of every key) -> bias ``(b, h, n, m)`` for the last ``n`` keys as queries,
    summed in float32 (float64 for float64 log gates). A positive log gate (a gate above 1, or logits
    passed in place of their logsigmoid) raises, and so does a NaN or ``-inf`` one (a gate of 0, whose
    ``-inf`` would make the cumulative sums' differences NaN) (eager mode only).

    Entry ``(i, j)`` is ``c_{m-n+i} - c_j`` with ``c`` the cumulative sum: the log gates of keys
    ``j+1 .. m-n+i``. Causal: keys after the query get positive values, which the causal mask hides.
    Encoder form (posenc's extension; FoX is causal): ``-|c_i - c_j|``, the gates between the two
    tokens in either direction.
    """
    check_float_tensor("log_gates", log_gates, ndim=3)
    if log_gates.numel() and can_read_values(log_gates) and bool((log_gates > 0).any()):
        raise ValueError(
            "`log_gates` must be <= 0 (logs of forget gates in (0, 1]: F.logsigmoid of the gate logits, not the "
            f"logits), got a maximum of {log_gates.max().item():.6g}"
        )
    if log_gates.numel() and can_read_values(log_gates) and not bool(log_gates.isfinite().all()):
        raise ValueError(
            "`log_gates` must be finite (logs of forget gates in (0, 1]; a gate of 0 gives -inf, and the bias, "
            "a difference of cumulative sums, would be NaN past it), got NaN or -inf"
        )
    return _gate_bias(log_gates, n, causal)


def _gate_bias(log_gates: torch.Tensor, n: int, causal: bool) -> torch.Tensor:
    """:func:`forget_gate_bias` without the host read of the gates' values, for log gates that are
    ``<= 0`` by construction (:meth:`ForgettingGate.log_gates`)."""
    m = log_gates.shape[-1]
    check_int("n", n, minimum=0)
    check_bool("causal", causal)
    if n > m:
        raise ValueError(f"`n` (queries) must lie in [0, {m}] (the keys include the queries), got {n}")
    work = arithmetic_dtype(log_gates.dtype)  # float32, or float64 for float64 gates
    b, h = log_gates.shape[:2]
    check_table_memory(lambda: f"the FoX bias (batch={b}, heads={h}, n={n}, m={m})", (b, h, n, m), bytes_per_entry=work.itemsize)
    cumulative = log_gates.to(work).cumsum(-1)  # (b, h, m)
    # (b, h, n, 1) - (b, h, 1, m) -> (b, h, n, m)
    bias = cumulative[..., m - n :].unsqueeze(-1) - cumulative.unsqueeze(-2)
    return bias if causal else -bias.abs()


@register(
    "fox",
    paper="Lin et al. 2025, arXiv:2503.02130 (Forgetting Transformer)",
    summary="Cumulative log forget gates computed from each token as a causal, data-dependent decay bias.",
)
class ForgettingGate(BiasEncoding):
    """FoX's forget-gate bias (causal; ``causal=False`` gives posenc's symmetric encoder form).

    Args:
        head_dim: width of each head's keys (the gate's input).
        heads: attention heads (one gate each).
        init_bias: initial ``b_h`` (``sigmoid(4) ~ 0.98``: a slow initial decay).
    """

    model_arguments = ("heads", "head_dim", "causal")
    supports_causal = True
    per_layer = True

    def __init__(
        self, head_dim: int, heads: int, *, init_bias: float = 4.0, causal: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.causal = check_bool("causal", causal)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.heads = check_positive_int("heads", heads)
        self.init_bias = check_float("init_bias", init_bias)
        check_table_fits({"heads": heads, "head_dim": head_dim}, (heads, head_dim + 1), dtype, device)
        self.weight = nn.Parameter(torch.empty(heads, head_dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(heads, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, std=self.head_dim**-0.5)
            self.bias.fill_(self.init_bias)

    def log_gates(self, k: torch.Tensor) -> torch.Tensor:
        """k ``(b, h, m, head_dim)`` -> ``log f_t`` ``(b, h, m)`` in float32 (float64 for float64 keys or parameters)."""
        check_float_tensor("k", k, ndim=4)
        if k.shape[1] != self.heads or k.shape[-1] != self.head_dim:
            raise ValueError(f"`k` must have shape (b, {self.heads}, m, {self.head_dim}), got {tuple(k.shape)}")
        work = arithmetic_dtype(k.dtype, self.weight.dtype)
        logits = torch.einsum("bhmd,hd->bhm", k.to(work), self.weight.to(work)) + self.bias.to(work)[:, None]
        return F.logsigmoid(logits)

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        return _gate_bias(self.log_gates(k), q_positions.n, self.causal)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """``score + c[b, h, q_idx + m - n] - c[b, h, kv_idx]`` from the ``(b, h, m)`` cumulative log gates
        (``-|.|`` of it in the encoder form): a small table, no ``(n, m)`` bias."""
        cumulative = self.log_gates(k).cumsum(-1)  # (b, h, m)
        shift, causal = k.shape[-2] - q_positions.n, self.causal

        def fn(score, b, h, q_idx, kv_idx, cumulative):
            term = cumulative[b, h, q_idx + shift] - cumulative[b, h, kv_idx]
            return score + (term if causal else -term.abs()).to(score.dtype)

        return ScoreMod(fn, (cumulative,))

    def forward(self, k: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """The ``(b, heads, n, m)`` bias for keys ``k`` ``(b, heads, m, head_dim)``, the last ``n`` (default all) as queries."""
        gates = self.log_gates(k)
        return _gate_bias(gates, k.shape[-2] if n is None else n, self.causal)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, heads={self.heads}, causal={self.causal}"
