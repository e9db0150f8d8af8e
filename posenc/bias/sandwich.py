"""Sandwich, the parameter-free bias from inner products of sinusoids (Chi et al. 2023, arXiv:2212.10356).

The inner product of two sinusoidal position vectors of width ``d'`` depends on their offset only,
``p_i . p_j = sum_{k=1}^{d'/2} cos((i - j) / 10000^(2k/d'))``, and decays with distance on average.
Sandwich uses it as a logit bias, shifted so that the offset 0 gets 0 and compressed per head like
ALiBi's slopes (section 5): head ``h`` of ``H`` divides it by ``8h / H``:

    B_h(i, j) = (sum_{k=1}^{d'/2} cos((i - j) / 10000^(2k/d')) - d'/2) / (8h / H)

(NeMo's ``SandwichRelativePositionEmbedding`` sums the same ``k = 1 .. d'/2``, with ``d'`` the width
per head, and subtracts ``d'/2``, so the bias at offset 0 is exactly 0.) Angles are formed in float64 and reduced modulo 2π;
the bias is float32, or float64 for float64 queries (or a module cast to float64).
Verified against a float64 transcription in ``tests/bias/test_sandwich.py``.
"""

from __future__ import annotations

import math

import torch

from posenc.bias.offset_bias import OffsetBias
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_even,
    check_fits,
    check_float,
    check_float_dtype,
    check_positions,
    check_positive_int,
)


def sandwich_frequencies(width: int, *, base: float = 10000.0, device=None) -> torch.Tensor:
    """``(width/2,)`` float64 frequencies ``base^(-2k/width)`` for ``k = 1 .. width/2``."""
    check_even("width", check_positive_int("width", width), why="the sinusoid has width/2 (sin, cos) pairs")
    base = check_float("base", base, positive=True)
    check_fits("width", width, (width // 2,), torch.float64, device)
    k = torch.arange(1, width // 2 + 1, dtype=torch.float64, device=device)
    return base ** (-2.0 * k / width)


def sandwich_bias(
    offsets: torch.Tensor,
    heads: int,
    *,
    width: int = 128,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """offsets ``(...)`` (``j - i``) -> bias ``(..., heads)``, eq. of section 5 with ALiBi-style compression.

    Computed in float64 and returned in ``dtype``, at least float32 (float32 for a half-precision
    ``dtype``: the bias is held in float32 or better, whatever the model's dtype).
    """
    check_positions("offsets", offsets)
    out = arithmetic_dtype(check_float_dtype("dtype", dtype))
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
    return (inner.unsqueeze(-1) / compression).to(out)


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
        # an empty buffer only to carry the device and, cast with the module, the dtype (the bias itself
        # is computed, it has no table)
        self.register_buffer("anchor", torch.empty(0, device=device), persistent=False)

    def bias_dtype(self, q: torch.Tensor | None = None) -> torch.dtype:
        """The bias's dtype: float32, or float64 for float64 queries ``q`` or a module cast to float64
        (its ``anchor`` follows ``.double()``; a half-precision model keeps float32)."""
        dtype = arithmetic_dtype(self.anchor.dtype)
        return dtype if q is None else torch.promote_types(dtype, q.dtype)

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.offset_bias_for(offsets, None)

    def offset_bias_for(self, offsets: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        return sandwich_bias(offsets, self.heads, width=self.width, base=self.base, dtype=self.bias_dtype(q))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, width={self.width}, base={self.base}"
