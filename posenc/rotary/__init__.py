"""Encodings that rotate queries and keys (the ``"rotary"`` hook)."""

from posenc.rotary.hf import from_hf_config, to_hf_rope_parameters
from posenc.rotary.p_rope import keep_highest_frequencies
from posenc.rotary.rope import RotaryPositionEncoding, apply_rope, apply_rotary, rotate_pairs
from posenc.rotary.scaled import apply_scaled_rope
from posenc.rotary.scaling import RopeScaling, rope_frequencies
from posenc.rotary.xpos import XPos, apply_xpos

__all__ = [
    "RopeScaling",
    "RotaryPositionEncoding",
    "XPos",
    "apply_rope",
    "apply_rotary",
    "apply_scaled_rope",
    "apply_xpos",
    "from_hf_config",
    "keep_highest_frequencies",
    "rope_frequencies",
    "rotate_pairs",
    "to_hf_rope_parameters",
]
