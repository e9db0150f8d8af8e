"""Encodings that rotate queries and keys (the ``"rotary"`` hook)."""

from posenc.rotary.rope import RotaryPositionEncoding, apply_rope, apply_rotary, rotate_pairs
from posenc.rotary.scaling import RopeScaling
from posenc.rotary.hybrid import AttentionTemperature, NoRope, RotaryOnHeads, attention_temperature
from posenc.rotary.learned import LearnedRope, apply_rope_learned
from posenc.rotary.mrope import apply_mrope, mrope_axis_of_frequency, mrope_cos_sin
from posenc.rotary.mrope_positions import mrope_position_ids
from posenc.rotary.nd import apply_rope_nd, rope_nd_cos_sin

__all__ = [
    "AttentionTemperature",
    "LearnedRope",
    "NoRope",
    "RopeScaling",
    "RotaryOnHeads",
    "RotaryPositionEncoding",
    "apply_mrope",
    "apply_rope",
    "apply_rope_learned",
    "apply_rope_nd",
    "apply_rotary",
    "attention_temperature",
    "mrope_axis_of_frequency",
    "mrope_cos_sin",
    "mrope_position_ids",
    "rope_nd_cos_sin",
    "rotate_pairs",
]
