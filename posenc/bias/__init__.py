"""Encodings that add a position-dependent term to the attention logits (the ``"bias"`` hook)."""

from posenc.attention.blocked import attention_with_bias
from posenc.bias.alibi import ALiBi, alibi_bias, alibi_slopes
from posenc.bias.cope import ContextualPosition, contextual_positions, interpolate_position_logits
from posenc.bias.cpb import ContinuousPositionBias, log_spaced
from posenc.bias.dynamic_bias import DynamicPositionBias, log_distance
from posenc.bias.fire import FIRE, fire_input
from posenc.bias.fox import ForgettingGate, forget_gate_bias
from posenc.bias.relative import relative_positions, toeplitz
from posenc.bias.kerple import Kerple, kerple_bias
from posenc.bias.offset_bias import OffsetBias
from posenc.bias.sandwich import Sandwich, sandwich_bias, sandwich_frequencies
from posenc.bias.t5 import T5RelativeBias, t5_relative_bucket

__all__ = [
    "FIRE",
    "ALiBi",
    "ContextualPosition",
    "ContinuousPositionBias",
    "DynamicPositionBias",
    "ForgettingGate",
    "Kerple",
    "OffsetBias",
    "Sandwich",
    "T5RelativeBias",
    "alibi_bias",
    "alibi_slopes",
    "attention_with_bias",
    "contextual_positions",
    "fire_input",
    "forget_gate_bias",
    "interpolate_position_logits",
    "kerple_bias",
    "log_distance",
    "log_spaced",
    "relative_positions",
    "sandwich_bias",
    "sandwich_frequencies",
    "t5_relative_bucket",
    "toeplitz",
]
