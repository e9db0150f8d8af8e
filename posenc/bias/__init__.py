"""Encodings that add a position-dependent term to the attention logits (the ``"bias"`` hook)."""

from posenc.bias.alibi import ALiBi, alibi_bias, alibi_slopes
from posenc.attention.blocked import attention_with_bias
from posenc.bias.relative import relative_positions, toeplitz
from posenc.bias.t5 import T5RelativeBias, t5_relative_bucket

__all__ = [
    "ALiBi",
    "T5RelativeBias",
    "alibi_bias",
    "alibi_slopes",
    "attention_with_bias",
    "relative_positions",
    "t5_relative_bucket",
    "toeplitz",
]
