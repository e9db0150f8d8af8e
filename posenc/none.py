"""No position encoding ("NoPE").

Self-attention without an encoding is permutation-equivariant (survey 1.1): permuting the input
tokens permutes the outputs the same way. Causal masking alone still leaks order (Kazemnejad et
al. 2023, arXiv:2305.19466), so ``none`` is a real baseline for decoders, and the identity element
of the encoder's equivariance tests.
"""

from __future__ import annotations

import torch

from posenc.core.base import PositionEncoding
from posenc.core.registry import register


@register(
    "none",
    paper="Vaswani et al. 2017, arXiv:1706.03762 (attention without position); Kazemnejad et al. 2023, arXiv:2305.19466",
    summary="No position information: attention stays permutation-equivariant.",
)
class NoPositionEncoding(PositionEncoding):
    """An encoding that adds nothing; every hook is the identity."""

    hooks = frozenset()

    def __init__(self, *, device: torch.device | str | None = None) -> None:
        # ``device`` is accepted (and unused) so every registered encoding builds with ``device=``
        super().__init__()
