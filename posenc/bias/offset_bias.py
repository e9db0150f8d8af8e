"""The base of every bias that is a function of the query-key offset alone.

Such a bias ``B_h(j - i)`` takes one value per distinct offset, so for implicit positions it is
evaluated on the ``n + m - 1`` offsets only and spread over the ``(n, m)`` grid by
:func:`~posenc.bias.relative.toeplitz` (whose backward sums the gradient along diagonals); explicit
positions evaluate it on the ``(b | 1, n, m)`` offsets directly. Subclasses define
:meth:`OffsetBias.offset_bias`.
"""

from __future__ import annotations

import torch

from posenc.bias.relative import BiasEncoding, relative_positions, toeplitz
from posenc.core.positions import Positions


def causal_distance(offsets: torch.Tensor, causal: bool) -> torch.Tensor:
    """The distance a bias reads from ``offsets = j - i``: ``i - j`` (clamped at 0) causally, ``|i - j|`` otherwise.

    In causal attention the keys past the query are masked, so their (clamped) value never matters.
    """
    return (-offsets).clamp(min=0) if causal else offsets.abs()


class OffsetBias(BiasEncoding):
    """A ``"bias"`` encoding whose value depends on ``j - i`` only (relative by construction)."""

    def offset_bias(self, offsets: torch.Tensor) -> torch.Tensor:
        """``offsets`` ``(...)`` (key - query, float64) -> bias ``(..., heads)``."""
        raise NotImplementedError

    def _device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        device = self._device()
        n, m = q_positions.n, k_positions.n
        if q_positions.is_implicit and k_positions.is_implicit and n > 0 and m > 0:
            gap = k_positions.offset - q_positions.offset  # offset of key j from query i is j - i + gap
            offsets = torch.arange(gap - n + 1, gap + m, device=device, dtype=torch.float64)
            # (n + m - 1, heads) -> (heads, n + m - 1) -> (1, heads, n, m)
            return toeplitz(self.offset_bias(offsets).t(), m).unsqueeze(0)
        offsets = relative_positions(q_positions, k_positions).to(device=device, dtype=torch.float64)
        # (b | 1, n, m, heads) -> (b | 1, heads, n, m)
        return self.offset_bias(offsets).permute(0, 3, 1, 2)
