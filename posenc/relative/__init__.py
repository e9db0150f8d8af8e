"""Encodings with relative-position terms that depend on content: Shaw et al.'s key/value tables and
Transformer-XL's attention (the "bias" and "value" hooks), with a segment-recurrent Transformer-XL."""

from posenc.relative.rel_shift import rel_shift
from posenc.relative.shaw import (
    OffsetRuns,
    ShawRelativePosition,
    expand_offsets,
    reduce_offsets,
    shaw_attention,
)
from posenc.relative.transformer_xl import TransformerXLRelative, relative_sinusoid
from posenc.relative.xl_model import TransformerXL

__all__ = [
    "OffsetRuns",
    "ShawRelativePosition",
    "TransformerXL",
    "TransformerXLRelative",
    "expand_offsets",
    "reduce_offsets",
    "rel_shift",
    "relative_sinusoid",
    "shaw_attention",
]
