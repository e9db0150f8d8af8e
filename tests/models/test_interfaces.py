"""The declared interfaces between encodings and their consumers (checked with ``isinstance``)."""

from __future__ import annotations

from torch import nn

from posenc.models.interfaces import GridBound, HeadCount, HeadWidth, ModelWidth, PrefixTokens, prefix_tokens
from posenc.testing import build


def test_patch_grid_encodings_declare_grid_and_prefix_tokens():
    rope_2d = build("rope_2d", num_prefix_tokens=1)
    assert isinstance(rope_2d, GridBound) and isinstance(rope_2d, PrefixTokens)
    assert prefix_tokens(rope_2d) == 1 and prefix_tokens(build("rope_2d")) == 0
    assert not isinstance(nn.Linear(2, 2), PrefixTokens) and prefix_tokens(nn.Linear(2, 2)) == 0


def test_sizes_are_read_through_their_protocols():
    alibi, rope, sinusoidal = build("alibi"), build("rope"), build("sinusoidal")
    assert isinstance(alibi, HeadCount) and alibi.heads == 2 and not isinstance(alibi, HeadWidth)
    assert isinstance(rope, HeadWidth) and rope.head_dim == 8
    assert isinstance(sinusoidal, ModelWidth) and sinusoidal.dim == 8
