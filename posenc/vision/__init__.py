"""Positions for vision Transformers over patch tokens: learned patch tables, 2-D relative bias, 2-D RoPE, conditional (convolutional) encodings."""

from posenc.vision.cpb_2d import ContinuousPositionBias2d, offset_table_2d
from posenc.vision.grid import check_grid, grid_coords, token_coords
from posenc.vision.learned import LearnedPatchPosition, interpolate_grid, resample_pos_embed
from posenc.vision.peg import PEG, peg
from posenc.vision.rel_bias_2d import RelativeBias2d, relative_index_2d, relative_position_index_2d, resample_bias_table
from posenc.vision.rope_mixed import RopeMixed, apply_rope_mixed, rope_mixed_init
from posenc.vision.rope_2d import Rope2d, apply_rope_2d, rope_2d_cos_sin

__all__ = [
    "PEG",
    "ContinuousPositionBias2d",
    "LearnedPatchPosition",
    "RelativeBias2d",
    "Rope2d",
    "RopeMixed",
    "apply_rope_2d",
    "apply_rope_mixed",
    "check_grid",
    "grid_coords",
    "interpolate_grid",
    "offset_table_2d",
    "peg",
    "relative_index_2d",
    "relative_position_index_2d",
    "resample_bias_table",
    "resample_pos_embed",
    "rope_2d_cos_sin",
    "rope_mixed_init",
    "token_coords",
]
