"""Sandwich, the parameter-free bias from inner products of sinusoids (Chi et al. 2023, arXiv:2212.10356).

The inner product of two sinusoidal position vectors of width ``d'`` depends on their offset only,
``p_i . p_j = sum_{k=1}^{d'/2} cos((i - j) / 10000^(2k/d'))``, and decays with distance on average.
Sandwich uses it as a logit bias, shifted so that the offset 0 gets 0 and compressed per head like
ALiBi's slopes (section 5): head ``h`` of ``H`` divides it by ``8h / H``:

    B_h(i, j) = (sum_{k=1}^{d'/2} cos((i - j) / 10000^(2k/d')) - d'/2) / (8h / H)

(NeMo's ``SandwichRelativePositionEmbedding`` sums the same ``k = 1 .. d'/2``, with ``d'`` the width
per head, and subtracts ``d'/2``, so the bias at offset 0 is exactly 0.) Angles are formed in float64 and reduced modulo 2π.
Verified against a float64 transcription in ``tests/bias/test_sandwich.py``.
"""

from __future__ import annotations

import math

import torch

from posenc.bias.offset_bias import OffsetBias
from posenc.core.registry import register
from posenc.core.validation import check_even, check_fits, check_float, check_positions, check_positive_int


def sandwich_frequencies(width: int, *, base: float = 10000.0, device=None) -> torch.Tensor:
    """``(width/2,)`` float64 frequencies ``base^(-2k/width)`` for ``k = 1 .. width/2``."""
    check_even("width", check_positive_int("width", width), why="the sinusoid has width/2 (sin, cos) pairs")
    k = torch.arange(1, width // 2 + 1, dtype=torch.float64, device=device)
    return base ** (-2.0 * k / width)


def sandwich_bias(offsets: torch.Tensor, heads: int, *, width: int = 128, base: float = 10000.0) -> torch.Tensor:
    """offsets ``(...)`` (``j - i``) -> bias ``(..., heads)`` in float32, eq. of section 5 with ALiBi-style compression."""
    check_positions("offsets", offsets)
    check_positive_int("heads", heads)
    check_even("width", check_positive_int("width", width), why="the sinusoid has width/2 (sin, cos) pairs")
    check_float("base", base, positive=True)
    check_fits("heads", heads, (*offsets.shape, heads), torch.float64, offsets.device)
    check_fits("width", width, (*offsets.shape, width // 2), torch.float64, offsets.device)
    freqs = sandwich_frequencies(width, base=base, device=offsets.device)
    # (..., 1) * (width/2,) -> (..., width/2) angles, reduced mod 2π before the cosine
    angles = torch.remainder(offsets.to(torch.float64).unsqueeze(-1) * freqs, 2 * math.pi)
    inner = torch.cos(angles).sum(-1) - width / 2
    compression = 8.0 * torch.arange(1, heads + 1, dtype=torch.float64, device=offsets.device) / heads
    return (inner.unsqueeze(-1) / compression).to(torch.float32)


@register(
    "sandwich",
    paper="Chi et al. 2023, arXiv:2212.10356",
    summary="The inner product of sinusoidal position vectors as a parameter-free, per-head compressed logit bias.",
)
class Sandwich(OffsetBias):
    """Sandwich's bias for ``heads`` heads from sinusoids of width ``width`` (``d'`` in the paper).

    Args:
        heads: attention heads.
        width: ``d'``, the width of the sinusoids whose inner product is taken (even).
        base: the sinusoid's base (10000).
    """

    model_arguments = ("heads",)

    def __init__(self, heads: int, *, width: int = 128, base: float = 10000.0, device=None) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.width = check_even("width", check_positive_int("width", width), why="the sinusoid has (sin, cos) pairs")
        self.base = check_float("base", base, positive=True)
        # an empty buffer only to carry the device (the bias itself is computed, it has no table)
        self.register_buffer("anchor", torch.empty(0, device=device), persistent=False)

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        return sandwich_bias(offsets, self.heads, width=self.width, base=self.base)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, width={self.width}"
