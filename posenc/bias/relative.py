"""Relative offsets between query and key positions, shared by every bias encoding."""

from __future__ import annotations

import torch

from posenc.core.positions import Positions


def relative_positions(q_positions: Positions | torch.Tensor, k_positions: Positions | torch.Tensor) -> torch.Tensor:
    """``key position - query position``: ``(b | 1, n)`` and ``(b | 1, m)`` -> ``(b | 1, n, m)``."""
    if isinstance(q_positions, Positions) and isinstance(k_positions, Positions):
        device = next((p.explicit.device for p in (q_positions, k_positions) if p.explicit is not None), None)
        if q_positions.is_implicit and k_positions.is_implicit:
            # a 1-D difference first: (m,) - (n, 1) broadcasts without building two (n, m) grids
            q = torch.arange(q_positions.offset, q_positions.end, device=device)
            k = torch.arange(k_positions.offset, k_positions.end, device=device)
            return (k.unsqueeze(0) - q.unsqueeze(1)).unsqueeze(0)
        q_positions, k_positions = q_positions.tensor(device), k_positions.tensor(device)
    return k_positions.unsqueeze(-2) - q_positions.unsqueeze(-1)
