"""The key/value cache of incremental decoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from posenc.core.positions import Positions


@dataclass
class KVCache:
    """Keys and values of the tokens decoded so far, per layer, with their positions.

    ``keys[l]``, ``values[l]``: ``(b, h, m, head_dim)`` (keys already rotated when the encoding
    rotates); ``positions``: the ``m`` cached keys' positions; ``key_mask``: ``(b, m)`` True where a
    cached key may be attended to, or None when all may; ``lengths``: ``(b,)`` real (unpadded) tokens
    per row, or None when no padding was ever given (ragged decoding: left-padded prompts of
    different lengths continue at their own positions); ``input_state``: what the input encoding
    carries to the next call (``PositionEncoding.input_state``), None when it carries nothing.
    """

    depth: int
    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    positions: Positions = field(default_factory=lambda: Positions(0))
    key_mask: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    input_state: Any = None

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [None] * self.depth
            self.values = [None] * self.depth

    @property
    def length(self) -> int:
        """Number of cached tokens; implicit positions of new tokens continue from here."""
        return self.positions.n

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values of ``layer``; returns all keys/values of that layer."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v
