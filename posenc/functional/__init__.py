"""The pure functions behind every encoding, re-exported by the file that defines them.

The names here are public API: their signatures are kept stable.
"""

# posenc/core
from posenc.core.positions import randomized_positions

# posenc/input
from posenc.input.learned import resize_table
from posenc.input.sinusoidal import sinusoidal

# posenc/rotary
from posenc.rotary.rope import apply_rope, apply_rope_qk, apply_rotary, rotate_pairs
from posenc.rotary.learned import apply_rope_learned
from posenc.rotary.mrope import apply_mrope
from posenc.rotary.nd import apply_rope_nd
from posenc.rotary.scaled import apply_scaled_rope
from posenc.rotary.scaling import rope_frequencies
from posenc.rotary.xpos import apply_xpos

# posenc/bias
from posenc.bias.alibi import alibi_bias, alibi_slopes
from posenc.bias.cope import contextual_positions, interpolate_position_logits
from posenc.bias.cpb import log_spaced
from posenc.bias.dynamic_bias import log_distance
from posenc.bias.fire import fire_input
from posenc.bias.fox import forget_gate_bias
from posenc.bias.kerple import kerple_bias
from posenc.bias.relative import relative_positions
from posenc.bias.sandwich import sandwich_bias
from posenc.bias.t5 import t5_relative_bucket

# posenc/relative, posenc/complex, posenc/context
from posenc.complex.embedding import complex_order
from posenc.context.conv_context import context_conv1d
from posenc.context.wav2vec2_conv import wav2vec2_conv_embedding
from posenc.relative.rel_shift import rel_shift
from posenc.relative.shaw import shaw_attention

# posenc/spatial, posenc/vision
from posenc.spatial.constant_input import adain
from posenc.spatial.coordconv import add_coords
from posenc.spatial.sinusoidal_nd import sinusoidal_coords, sinusoidal_nd
from posenc.spatial.spatial_broadcast import spatial_broadcast
from posenc.vision.cpb_2d import offset_table_2d
from posenc.vision.learned import resample_pos_embed
from posenc.vision.peg import peg
from posenc.vision.rel_bias_2d import relative_position_index_2d
from posenc.vision.rope_2d import apply_rope_2d
from posenc.vision.rope_mixed import apply_rope_mixed

# posenc/coordinate, posenc/step, posenc/hyper
from posenc.coordinate.fourier_features import fourier_features
from posenc.coordinate.hash_grid import hash_grid_encoding
from posenc.coordinate.integrated_pe import integrated_positional_encoding
from posenc.coordinate.kplanes import kplanes_features
from posenc.coordinate.spherical_harmonics import spherical_harmonics
from posenc.coordinate.nerf import nerf_encoding
from posenc.hyper.hyper_conv import conv2d_per_position
from posenc.step.noise_level import noise_level_embedding
from posenc.step.timestep import timestep_embedding

# posenc/core
from posenc.core.frequencies import inverse_frequencies

__all__ = [
    "adain",
    "add_coords",
    "alibi_bias",
    "alibi_slopes",
    "apply_mrope",
    "apply_rope",
    "apply_rope_2d",
    "apply_rope_learned",
    "apply_rope_mixed",
    "apply_rope_nd",
    "apply_rope_qk",
    "apply_rotary",
    "apply_scaled_rope",
    "apply_xpos",
    "complex_order",
    "context_conv1d",
    "contextual_positions",
    "conv2d_per_position",
    "fire_input",
    "forget_gate_bias",
    "fourier_features",
    "hash_grid_encoding",
    "integrated_positional_encoding",
    "interpolate_position_logits",
    "inverse_frequencies",
    "kerple_bias",
    "kplanes_features",
    "log_distance",
    "log_spaced",
    "nerf_encoding",
    "noise_level_embedding",
    "offset_table_2d",
    "peg",
    "randomized_positions",
    "rel_shift",
    "relative_position_index_2d",
    "relative_positions",
    "resample_pos_embed",
    "resize_table",
    "rope_frequencies",
    "rotate_pairs",
    "sandwich_bias",
    "shaw_attention",
    "sinusoidal",
    "sinusoidal_coords",
    "sinusoidal_nd",
    "spatial_broadcast",
    "spherical_harmonics",
    "t5_relative_bucket",
    "timestep_embedding",
    "wav2vec2_conv_embedding",
]
