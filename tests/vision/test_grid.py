"""Patch-grid helpers: grid checks and the token-index to (row, col) mapping."""

from __future__ import annotations

import pytest
import torch

from posenc.core.positions import Positions
from posenc.vision import check_grid, grid_coords, token_coords


def test_check_grid():
    assert check_grid("grid", 3) == (3, 3)
    assert check_grid("grid", [2, 5]) == (2, 5)
    with pytest.raises(ValueError, match=r"grid\[1\]"):
        check_grid("grid", (2, 0))
    with pytest.raises(ValueError, match="grid"):
        check_grid("grid", (1, 2, 3))


def test_grid_coords_raster_order():
    torch.testing.assert_close(grid_coords((2, 3)), torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]))


def test_token_coords_implicit_and_explicit():
    coords, is_patch = token_coords(Positions(7), grid=(2, 3), num_prefix_tokens=1)
    assert is_patch.tolist() == [[False] + [True] * 6]
    torch.testing.assert_close(coords[0, 1:], grid_coords((2, 3)))
    coords, is_patch = token_coords(Positions(2, explicit=torch.tensor([[6, 0]])), grid=(2, 3), num_prefix_tokens=1)
    assert coords[0, 0].tolist() == [1, 2] and is_patch.tolist() == [[True, False]]
    with pytest.raises(ValueError, match="positions"):
        token_coords(Positions(8), grid=(2, 3), num_prefix_tokens=1)
    with pytest.raises(ValueError, match="positions"):
        token_coords(Positions(1, explicit=torch.tensor([[0.5]])), grid=(2, 3), num_prefix_tokens=1)
