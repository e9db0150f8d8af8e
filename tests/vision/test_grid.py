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


def test_grid_coords_checks_its_grid():
    # an int failed to unpack, a negative side inside torch.arange, a float one inside meshgrid,
    # and a grid past memory in the allocator
    torch.testing.assert_close(grid_coords(2), grid_coords((2, 2)))
    with pytest.raises(ValueError, match=r"`grid\[0\]` must be >= 1"):
        grid_coords((-1, 3))
    with pytest.raises(TypeError, match=r"`grid\[0\]` must be an int"):
        grid_coords((2.5, 3))
    with pytest.raises(ValueError, match="`grid`=.*more than"):
        grid_coords((10**9, 10**9))


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


def test_token_coords_compiles_with_fullgraph():
    """cpb_2d, rope_mixed and the partial-grid paths of rel_bias_2d and peg map tokens to (row, col) on
    every call; a ViT compiled with fullgraph=True must get through it (a clamp before // and % did not)."""

    def coords_of(x):
        coords, is_patch = token_coords(Positions(x.shape[0]), grid=(2, 3), num_prefix_tokens=1)
        return coords * is_patch.unsqueeze(-1)

    x = torch.zeros(7)
    torch.testing.assert_close(torch.compile(coords_of, fullgraph=True)(x), coords_of(x))
    assert coords_of(x)[0, 1:].tolist() == grid_coords((2, 3)).tolist()


def test_token_coords_checks_its_arguments():
    # num_prefix_tokens=1.0 returned float coordinates (documented int64), -1 was refused as '`positions`
    # reach token 6 but the grid (2, 3) with -1 prefix tokens has 5 tokens', a tensor of positions failed
    # with AttributeError: 'Tensor' object has no attribute 'is_implicit'
    with pytest.raises(TypeError, match="`num_prefix_tokens` must be an int, got float 1.0"):
        token_coords(Positions(7), grid=(2, 3), num_prefix_tokens=1.0)
    with pytest.raises(ValueError, match="`num_prefix_tokens` must be >= 0, got -1"):
        token_coords(Positions(5), grid=(2, 3), num_prefix_tokens=-1)
    with pytest.raises(TypeError, match="`positions` must be a Positions, got Tensor"):
        token_coords(torch.arange(7), grid=(2, 3), num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"`grid\[0\]` must be >= 1"):
        token_coords(Positions(1), grid=(0, 3), num_prefix_tokens=1)
    coords, _ = token_coords(Positions(7), grid=3, num_prefix_tokens=1)  # an int grid means (g, g)
    assert coords.dtype == torch.int64 and coords[0, -1].tolist() == [1, 2]


def test_grid_coords_refuses_a_grid_past_memory():
    # grid_coords((10**6, 10**6)) reached the CPU allocator ('you tried to allocate 8000000000000 bytes')
    with pytest.raises(ValueError, match=r"`grid`=\(1000000, 1000000\) needs a \(1000000000000, 2\) torch.int64 tensor"):
        grid_coords((10**6, 10**6))
    with pytest.raises(ValueError, match=r"`grid\[0\]` must be >= 1"):
        grid_coords((0, 3))
    assert grid_coords(2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
