"""KERPLE, kernelized relative positional embedding (Chi et al. 2022, arXiv:2205.09921).

A conditionally positive definite kernel of the distance, shifted into a bias (section 4, eq. 5):
the logarithmic kernel ``-r1 * log(1 + r2 * |i - j|)`` and the power kernel ``-r1 * |i - j|^r2``,
with learned per-head ``r1, r2 > 0`` and, for the power kernel, ``r2 <= 2`` (the range in which
``-|x|^p`` is conditionally positive definite). The constraints are enforced as in the paper's
code, by clamping the parameters to ``[eps, ...]`` (and the exponent to ``<= 2``) where they are
used; gradients past a bound are zero. Initialisation as in that code: the scale uniform in
``[0, 2)`` (log kernel) or ``[0, 1)`` (power kernel's scale), the other parameter uniform in the
other range. Verified against a float64 transcription of eq. 5 in ``tests/bias/test_kerple.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from posenc.bias.offset_bias import OffsetBias, causal_distance
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.terms import ScoreMod, position_gap
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_choice,
    check_float,
    check_float_tensor,
    check_nonnegative_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
)

KERNELS = ("log", "power")


def kerple_bias(
    distance: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, *, kernel: Literal["log", "power"] = "log"
) -> torch.Tensor:
    """distance ``(...)`` >= 0, r1 and r2 ``(heads,)`` (already constrained) -> bias ``(..., heads)`` in float32 (float64 for float64 parameters).

    ``log``: ``-r1 * log(1 + r2 * distance)``; ``power``: ``-r1 * distance ** r2``. Parameters outside
    the paper's constraints (``r1, r2 > 0`` and finite; ``r2 <= 2`` for ``power``) raise (eager mode only):
    :meth:`Kerple.constrained` applies them to learned ones.
    """
    check_choice("kernel", kernel, KERNELS)
    check_nonnegative_positions("distance", distance)
    check_float_tensor("r1", r1, ndim=1)
    check_float_tensor("r2", r2, ndim=1)
    check_same_device(distance=distance, r1=r1, r2=r2)
    if r1.shape != r2.shape:
        raise ValueError(f"`r1` and `r2` must have the same shape (heads,), got {tuple(r1.shape)} and {tuple(r2.shape)}")
    top = 2.0 if kernel == "power" else math.inf
    readable = r1.numel() and can_read_values(r1) and can_read_values(r2)
    # NaN fails every comparison; an infinite r1 or r2 gives NaN at distance 0 (inf * 0)
    inside = (r1 > 0) & (r2 > 0) & (r2 <= top) & r1.isfinite() & r2.isfinite()
    if readable and not bool(inside.all()):
        bound = "(0, 2]" if kernel == "power" else "> 0"
        raise ValueError(
            f"`r1` must be > 0 and `r2` {bound} for the {kernel} kernel, both finite (KERPLE's constraints; Kerple.constrained() "
            f"applies them), got r1 in [{r1.min().item():.6g}, {r1.max().item():.6g}] and r2 in "
            f"[{r2.min().item():.6g}, {r2.max().item():.6g}]"
        )
    return _kernel_bias(distance, r1, r2, kernel)


def _kernel_bias(distance: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, kernel: str) -> torch.Tensor:
    """:func:`kerple_bias` without its checks, for parameters constrained by construction
    (:meth:`Kerple.constrained`) and distances >= 0: no host read of their values per call."""
    work = arithmetic_dtype(r1.dtype, r2.dtype)  # float32, or float64 for float64 parameters
    d, r1, r2 = distance.unsqueeze(-1).to(work), r1.to(work), r2.to(work)
    if kernel == "log":
        return -r1 * torch.log1p(r2 * d)
    return -r1 * d.pow(r2)


@register(
    "kerple",
    paper="Chi et al. 2022, arXiv:2205.09921",
    summary="A learned conditionally positive definite kernel of the distance (log or power) as a logit bias.",
)
class Kerple(OffsetBias):
    """KERPLE's per-head kernel bias.

    Args:
        heads: attention heads.
        kernel: ``"log"`` (``-r1 log(1 + r2 |i-j|)``, the paper's best) or ``"power"`` (``-r1 |i-j|^r2``).
        causal: distances ``i - j`` of past keys (True) or ``|i - j|`` (False).
        eps: the lower bound of both parameters.
    """

    model_arguments = ("heads", "causal")

    def __init__(
        self,
        heads: int,
        *,
        kernel: Literal["log", "power"] = "log",
        causal: bool = True,
        eps: float = 1e-2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.kernel = check_choice("kernel", kernel, KERNELS)
        self.causal = check_bool("causal", causal)
        self.eps = check_float("eps", eps, positive=True)
        check_table_fits({"heads": heads}, (2, heads), dtype, device)
        self.r1 = nn.Parameter(torch.empty(heads, device=device, dtype=dtype))
        self.r2 = nn.Parameter(torch.empty(heads, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.kernel == "log":
                self.r1.uniform_(0.0, 2.0)
                self.r2.uniform_(0.0, 1.0)
            else:
                self.r1.uniform_(0.0, 1.0)
                self.r2.uniform_(0.0, 2.0)

    def constrained(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r1, r2)`` within the paper's constraints: both >= eps, the power kernel's exponent <= 2."""
        r1, r2 = self.r1.clamp(min=self.eps), self.r2.clamp(min=self.eps)
        return (r1, r2.clamp(max=2.0)) if self.kernel == "power" else (r1, r2)

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        r1, r2 = self.constrained()
        return _kernel_bias(causal_distance(offsets, self.causal), r1, r2, self.kernel)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """Implicit positions: the kernel in closed form from ``kv_idx - q_idx`` and the per-head
        ``(r1, r2)`` (compilable on CPU); explicit positions: the per-offset bias, gathered."""
        gap = position_gap(q_positions, k_positions, self.r1.device)
        if gap is None:
            return super().score_mod(q, k, q_positions=q_positions, k_positions=k_positions)
        r1, r2 = self.constrained()
        causal, log = self.causal, self.kernel == "log"
        work = arithmetic_dtype(r1.dtype)  # float32, or float64 for float64 parameters

        def fn(score, b, h, q_idx, kv_idx, r1, r2, gap):
            d = causal_distance(kv_idx - q_idx + gap, causal).to(r1.dtype)
            bias = -r1[h] * (torch.log1p(r2[h] * d) if log else d.pow(r2[h]))
            return score + bias.to(score.dtype)

        return ScoreMod(fn, (r1.to(work), r2.to(work), gap), static=((0,), (0,), ()))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kernel={self.kernel!r}, causal={self.causal}, eps={self.eps}"
