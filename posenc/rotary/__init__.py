"""Encodings that rotate queries and keys (the ``"rotary"`` hook)."""

from posenc.rotary.hf import from_hf_config, to_hf_rope_parameters
from posenc.rotary.p_rope import keep_highest_frequencies
from posenc.rotary.rope import RotaryPositionEncoding, apply_rope, apply_rope_qk, apply_rotary, rotate_pairs
from posenc.rotary.hybrid import AttentionTemperature, NoRope, RotaryOnHeads, attention_temperature
from posenc.rotary.learned import LearnedRope, apply_rope_learned
from posenc.rotary.mrope import apply_mrope, mrope_axis_of_frequency, mrope_cos_sin
from posenc.rotary.mrope_positions import mrope_position_ids
from posenc.rotary.nd import apply_rope_nd, rope_nd_cos_sin
from posenc.rotary.scaled import apply_scaled_rope
from posenc.rotary.scaling import RopeScaling, rope_frequencies
from posenc.rotary.xpos import XPos, apply_xpos

__all__ = [
    "AttentionTemperature",
    "LearnedRope",
    "NoRope",
    "RopeScaling",
    "RotaryOnHeads",
    "RotaryPositionEncoding",
    "XPos",
    "apply_mrope",
    "apply_rope",
    "apply_rope_learned",
    "apply_rope_nd",
    "apply_rope_qk",
    "apply_rotary",
    "apply_scaled_rope",
    "apply_xpos",
    "attention_temperature",
    "from_hf_config",
    "keep_highest_frequencies",
    "mrope_axis_of_frequency",
    "mrope_cos_sin",
    "mrope_position_ids",
    "rope_frequencies",
    "rope_nd_cos_sin",
    "rotate_pairs",
    "to_hf_rope_parameters",
]
