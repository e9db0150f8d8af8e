"""The key/value cache of incremental decoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from posenc.core.positions import Positions
from posenc.core.validation import check_float_tensor, check_positive_int, check_tensor


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
        check_positive_int("depth", self.depth)
        if not self.keys and not self.values:
            self.keys = [None] * self.depth
            self.values = [None] * self.depth
        for name, layers in (("keys", self.keys), ("values", self.values)):
            if not isinstance(layers, list):
                raise TypeError(f"`{name}` must be a list of {self.depth} (depth) tensors or None, got {type(layers).__name__}")
            if len(layers) != self.depth:
                raise ValueError(f"`{name}` must be a list of {self.depth} (depth) tensors or None, got {len(layers)}")
            for layer, t in enumerate(layers):
                if t is not None:
                    check_float_tensor(f"{name}[{layer}]", t, ndim=4)
        if not isinstance(self.positions, Positions):
            raise TypeError(f"`positions` must be a posenc Positions, got {type(self.positions).__name__}")
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            if (k is None) != (v is None) or (k is not None and (k.shape[:-1] != v.shape[:-1] or k.shape[-2] != self.length)):
                raise ValueError(
                    f"`keys[{layer}]` and `values[{layer}]` must both be None or hold the {self.length} cached "
                    f"tokens of `positions` as (b, h, {self.length}, d), got "
                    f"{None if k is None else tuple(k.shape)} and {None if v is None else tuple(v.shape)}"
                )
        if self.key_mask is not None:
            check_tensor("key_mask", self.key_mask, ndim=2)
            if self.key_mask.dtype != torch.bool or self.key_mask.shape[-1] != self.length:
                raise ValueError(
                    f"`key_mask` must be a bool tensor of shape (b, {self.length}), got "
                    f"{self.key_mask.dtype} {tuple(self.key_mask.shape)}"
                )
        if self.lengths is not None:
            check_tensor("lengths", self.lengths, ndim=1)
            if self.lengths.is_floating_point() or self.lengths.dtype == torch.bool:
                raise ValueError(f"`lengths` must be an integer tensor of shape (b,), got {self.lengths.dtype}")

    @property
    def length(self) -> int:
        """Number of cached tokens; implicit positions of new tokens continue from here."""
        return self.positions.n

    def snapshot(self) -> tuple:
        """What a call changes (the layers' keys and values, positions, key mask, lengths, input state),
        to :meth:`restore` if the call fails part-way (after some layers were extended)."""
        return list(self.keys), list(self.values), self.positions, self.key_mask, self.lengths, self.input_state

    def restore(self, state: tuple) -> None:
        """Put back a :meth:`snapshot`."""
        keys, values, self.positions, self.key_mask, self.lengths, self.input_state = state
        self.keys[:], self.values[:] = keys, values

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values of ``layer``; returns all keys/values of that layer."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v
