"""Encodings that rotate queries and keys (the ``"rotary"`` hook)."""

from posenc.rotary.rope import RotaryPositionEncoding, apply_rope, apply_rotary, rotate_pairs
from posenc.rotary.scaling import RopeScaling

__all__ = ["RopeScaling", "RotaryPositionEncoding", "apply_rope", "apply_rotary", "rotate_pairs"]
