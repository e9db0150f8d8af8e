"""Encodings that rotate queries and keys (the ``"rotary"`` hook)."""

from posenc.rotary.rope import RotaryPositionEncoding, apply_rope, apply_rotary, rotate_pairs
from posenc.rotary.scaling import RopeScaling
from posenc.rotary.nd import apply_rope_nd, rope_nd_cos_sin

__all__ = [
    "RopeScaling",
    "RotaryPositionEncoding",
    "apply_rope",
    "apply_rope_nd",
    "apply_rotary",
    "rope_nd_cos_sin",
    "rotate_pairs",
]
