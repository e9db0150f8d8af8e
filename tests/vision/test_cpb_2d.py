"""Swin V2's 2-D continuous position bias against a double loop over patch pairs, and its grid transfer."""

from __future__ import annotations

import math

import torch

from posenc.models import ViT
from posenc.vision import ContinuousPositionBias2d


def spaced(x: float, trained: int) -> float:
    return math.copysign(math.log2(1 + abs(x) * 8 / (trained - 1)) / 3, x) if x else 0.0


def test_matches_a_double_loop_over_patches():
    torch.manual_seed(0)
    module = ContinuousPositionBias2d(2, (2, 3), num_prefix_tokens=1, hidden=8).double()
    bias = module()
    lin1, lin2 = module.mlp.net[0], module.mlp.net[2]
    coords = [(r, c) for r in range(2) for c in range(3)]
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            x = torch.tensor([spaced(ya - yb, 2), spaced(xa - xb, 3)], dtype=torch.float64)
            h = 16 * torch.sigmoid(lin2(torch.relu(lin1(x))))
            torch.testing.assert_close(bias[0, :, a + 1, b + 1].double(), h, atol=1e-6, rtol=1e-6)
    assert bias[0, :, 0].abs().max() == 0 and bias[0, :, :, 0].abs().max() == 0  # the class token


def test_a_trained_network_runs_on_another_grid():
    small = ContinuousPositionBias2d(2, 3, hidden=8)
    big = ContinuousPositionBias2d(2, 5, pretrained_grid=3, hidden=8)
    big.load_state_dict(small.state_dict())
    # offsets that exist on both grids get the same bias
    torch.testing.assert_close(big()[0, :, 0, 1], small()[0, :, 0, 1])


def test_in_the_vit():
    model = ViT(16, 4, 10, dim=16, heads=2, position="cpb_2d", hidden=8)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
