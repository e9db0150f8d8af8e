"""Continuous position bias of Swin Transformer V2 (Liu et al. 2022, arXiv:2111.09883, section 3.3), 1-D.

Instead of a table, a two-layer MLP ``G`` maps the log-spaced offset to a bias per head, so a model
trained at one window (or length) transfers to another (eq. 3-4):

    x_hat = sign(x) * log2(1 + 8 |x| / (M - 1)) / log2(8),     B = 16 * sigmoid(G(x_hat))

with ``M`` the training window (``max_distance + 1`` here; offsets are divided by ``max_distance``),
``G = Linear(1, 512) -> ReLU -> Linear(512, heads, bias=False)``. The ``16 sigmoid`` bound is
Swin V2's (its code applies it after the MLP). The 2-D form over a patch grid is
:mod:`posenc.vision.cpb_2d`. Verified against a float64 transcription in ``tests/bias/test_cpb.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc.bias.offset_bias import OffsetBias, causal_distance
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import check_bool, check_float, check_layers_fit, check_positions, check_positive_int


def log_spaced(offsets: torch.Tensor, max_distance: float) -> torch.Tensor:
    """Swin V2's ``sign(x) log2(1 + 8 |x| / max_distance) / log2(8)`` (offsets normalised by the trained range)."""
    check_positions("offsets", offsets)
    check_float("max_distance", max_distance, positive=True)
    x = offsets * (8.0 / max_distance)
    return torch.sign(x) * torch.log2(1.0 + x.abs()) / math.log2(8.0)


class CPBMLP(nn.Module):
    """Swin V2's meta network: ``Linear(in, hidden) -> ReLU -> Linear(hidden, heads, bias=False)``, then ``16 sigmoid``."""

    def __init__(self, in_dim: int, heads: int, hidden: int = 512, device=None, dtype=None) -> None:
        super().__init__()
        check_layers_fit({"hidden": hidden, "heads": heads}, hidden * (in_dim + 1 + heads), dtype, device)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, device=device, dtype=dtype),
            nn.ReLU(),
            nn.Linear(hidden, heads, bias=False, device=device, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(..., in_dim)`` log-spaced offsets -> ``(..., heads)`` biases in ``(0, 16)``, in float32
        (float64 for float64 weights; the network itself runs in its weights' dtype)."""
        weight = self.net[0].weight
        work = arithmetic_dtype(weight.dtype)  # float32, or float64 for float64 weights
        return 16.0 * torch.sigmoid(self.net(x.to(weight.dtype))).to(work)


@register(
    "cpb",
    paper="Liu et al. 2022, arXiv:2111.09883 (Swin Transformer V2, log-spaced continuous position bias)",
    summary="An MLP of the log-spaced relative offset gives a bounded bias per head; transfers across lengths.",
)
class ContinuousPositionBias(OffsetBias):
    """Swin V2's log-spaced continuous position bias over 1-D offsets.

    Args:
        heads: attention heads.
        max_distance: the offset range seen in training (Swin's ``M - 1``); offsets are normalised by it.
        hidden: width of the meta network (512 in Swin V2).
        causal: read the past distance only (keys after the query are masked anyway).
    """

    model_arguments = ("heads", "causal")

    def __init__(
        self, heads: int, *, max_distance: int = 64, hidden: int = 512, causal: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.max_distance = check_positive_int("max_distance", max_distance)
        self.causal = check_bool("causal", causal)
        self.mlp = CPBMLP(1, heads, check_positive_int("hidden", hidden), device=device, dtype=dtype)

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        x = -causal_distance(offsets, True) if self.causal else offsets
        return self.mlp(log_spaced(x, self.max_distance).unsqueeze(-1))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, max_distance={self.max_distance}, causal={self.causal}"
