"""FIRE against a float64 transcription of eq. 5-6: an MLP of psi(i - j) / psi(max(L, i))."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.bias import FIRE, fire_input


def test_matches_the_formula_pair_by_pair():
    torch.manual_seed(0)
    module = FIRE(2, hidden=8, init_c=0.3, init_threshold=4.0).double()
    bias = module(5, 9, offset=4)
    lin1, lin2 = module.mlp[0], module.mlp[2]
    psi = lambda x: math.log(0.3 * x + 1)
    for i in range(5):
        for j in range(9):
            qi = i + 4
            x = psi(max(qi - j, 0)) / psi(max(4.0, qi))
            h = lin2(torch.relu(lin1(torch.tensor([x], dtype=torch.float64))))
            torch.testing.assert_close(bias[0, :, i, j].double(), h, atol=1e-6, rtol=1e-6)


def test_progressive_interpolation_maps_every_past_into_the_unit_interval():
    c, threshold = torch.tensor(0.1), torch.tensor(8.0)
    i = torch.arange(0, 5000.0)[:, None]
    j = torch.arange(0, 5000.0, 97)[None, :]
    x = fire_input((i - j).clamp(min=0), i, c, threshold)
    assert x.min() >= 0 and x.max() <= 1 + 1e-6
    # the farthest key of any query past the threshold maps to exactly 1
    assert fire_input(torch.tensor([[1000.0]]), torch.tensor([[1000.0]]), c, threshold).item() == pytest.approx(1.0)


def test_c_and_threshold_learn():
    module = FIRE(2, hidden=8, init_threshold=2.0)
    module(6).sum().backward()
    assert module.c.grad is not None and module.c.grad != 0
    assert module.threshold.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="init_c"):
        FIRE(2, init_c=0)
    with pytest.raises(ValueError, match="init_threshold"):
        FIRE(2, init_threshold=-1)
