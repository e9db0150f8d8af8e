"""Swin V2's continuous position bias in 1-D: log-spaced offsets through the meta network, bounded in (0, 16)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.bias import ContinuousPositionBias, log_spaced
from posenc.core.positions import Positions

#: query and key positions of the float64 and dtype tests: from 0, from 3, and explicit (packed documents)
POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


def test_log_spacing_matches_swin_v2():
    offsets = torch.tensor([-7.0, -1.0, 0.0, 3.0, 7.0], dtype=torch.float64)
    # Swin V2: x / (M - 1) * 8, then sign(x) log2(|x| + 1) / log2(8); with M - 1 = 7
    expected = [math.copysign(math.log2(abs(x) / 7 * 8 + 1) / 3, x) if x else 0.0 for x in offsets.tolist()]
    assert log_spaced(offsets, 7).tolist() == pytest.approx(expected)
    assert log_spaced(torch.tensor([7.0]), 7).item() == pytest.approx(math.log2(9) / 3)  # the edge of the trained range


def test_matches_the_meta_network_pair_by_pair():
    torch.manual_seed(0)
    module = ContinuousPositionBias(2, max_distance=8, hidden=16, causal=False).double()
    bias = module(3, 5, offset=2)
    assert bias.dtype == torch.float64
    lin1, lin2 = module.mlp.net[0], module.mlp.net[2]
    for i in range(3):
        for j in range(5):
            x = j - (i + 2)
            xs = math.copysign(math.log2(1 + abs(x) * 8 / 8) / 3, x) if x else 0.0
            h = 16 * torch.sigmoid(lin2(torch.relu(lin1(torch.tensor([xs], dtype=torch.float64)))))
            torch.testing.assert_close(bias[0, :, i, j], h, atol=1e-12, rtol=0)
    assert ((bias > 0) & (bias < 16)).all()


def test_relative():
    module = ContinuousPositionBias(2, hidden=8)
    p = torch.arange(4)
    torch.testing.assert_close(module(4, q_positions=p + 77, k_positions=p + 77), module(4))


def test_bad_input():
    with pytest.raises(ValueError, match="max_distance"):
        ContinuousPositionBias(2, max_distance=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal):
    """The meta network's output was cast to float32, so a float64 model's blocked and eager paths
    agreed only to about 1e-7 (and gradcheck was weak); it now stays float64."""
    torch.manual_seed(0)
    module = ContinuousPositionBias(2, max_distance=8, hidden=8, causal=causal)
    assert_float64_attention_is_exact(module, positions, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(ContinuousPositionBias(2, max_distance=8, hidden=8), positions, dtype)
