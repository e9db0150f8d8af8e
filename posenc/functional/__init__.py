"""The pure functions behind every encoding, re-exported by the file that defines them.

The names here are public API: their signatures are kept stable.
"""

# posenc/input
from posenc.input.learned import resize_table
from posenc.input.sinusoidal import sinusoidal

# posenc/rotary
from posenc.rotary.rope import apply_rope, apply_rotary, rotate_pairs

# posenc/bias
from posenc.bias.alibi import alibi_bias, alibi_slopes
from posenc.bias.relative import relative_positions
from posenc.bias.t5 import t5_relative_bucket

# posenc/relative, posenc/complex, posenc/context  (issue: relative encodings)

# posenc/spatial, posenc/vision  (issue: position for images)

# posenc/coordinate, posenc/step, posenc/hyper  (issue: coordinate and step encodings)

# posenc/core
from posenc.core.frequencies import inverse_frequencies

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "apply_rotary",
    "inverse_frequencies",
    "relative_positions",
    "resize_table",
    "rotate_pairs",
    "sinusoidal",
    "t5_relative_bucket",
]
