"""Dynamic position bias: an MLP of the (log) offset, evaluated once per offset, equal to a float64 transcription."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.bias import DynamicPositionBias
from posenc.core.positions import Positions

#: query and key positions of the float64 and dtype tests: from 0, from 3, and explicit (packed documents)
POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("log", [True, False])
def test_matches_the_mlp_applied_pair_by_pair(causal, log):
    torch.manual_seed(0)
    module = DynamicPositionBias(3, hidden=8, depth=2, log_distance=log, causal=causal).double()
    bias = module(4, 6, offset=2)
    assert bias.dtype == torch.float64
    layers = [layer for layer in module.mlp if isinstance(layer, torch.nn.Linear)]
    for i in range(4):
        for j in range(6):
            x = j - (i + 2)
            if causal:
                x = min(x, 0)
            if log:
                x = (1 if x > 0 else -1 if x < 0 else 0) * torch.log1p(torch.tensor(abs(x), dtype=torch.float64))
            h = torch.tensor([float(x)], dtype=torch.float64)
            for k, layer in enumerate(layers):
                h = layer(h)
                h = torch.nn.functional.silu(h) if k < len(layers) - 1 else h
            torch.testing.assert_close(bias[0, :, i, j], h, atol=1e-12, rtol=0)


def test_relative_and_defined_past_any_length():
    module = DynamicPositionBias(2, hidden=8)
    p = torch.arange(6)
    torch.testing.assert_close(module(6, q_positions=p + 1000, k_positions=p + 1000), module(6))
    assert torch.isfinite(module(3, q_positions=torch.arange(3) + 10**6, k_positions=torch.arange(3))).all()


def test_gradient_flows_to_the_mlp():
    module = DynamicPositionBias(2, hidden=8)
    module(5).sum().backward()
    assert all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("log_distance", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_x_transformers_with_the_first_layer_negated(log_distance, causal):
    """x-transformers' ``DynamicPositionBias`` feeds ``i - j``, posenc ``j - i``: with its weights copied and
    the first layer's weight negated the biases agree (on the visible keys when causal)."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    torch.manual_seed(0)
    peer = xt.DynamicPositionBias(16, heads=3, depth=2, log_distance=log_distance)
    ours = DynamicPositionBias(3, hidden=16, depth=2, log_distance=log_distance, causal=causal)
    theirs_linear = [m for m in peer.modules() if isinstance(m, torch.nn.Linear)]
    ours_linear = [m for m in ours.mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for a, b in zip(theirs_linear, ours_linear, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        ours_linear[0].weight.neg_()
    n, m = 5, 9
    want = peer(n, m)  # (heads, n, m), the last n of m positions as queries
    got = ours.score_bias(None, None, q_positions=Positions(n, offset=m - n), k_positions=Positions(m))[0]
    visible = torch.ones(n, m, dtype=torch.bool).tril(m - n) if causal else torch.ones(n, m, dtype=torch.bool)
    torch.testing.assert_close(got[:, visible], want[:, visible], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal):
    """The MLP's output was cast to float32, so a float64 model's blocked and eager paths agreed only
    to about 1e-7 (and gradcheck was weak); it now stays float64."""
    torch.manual_seed(0)
    assert_float64_attention_is_exact(DynamicPositionBias(2, hidden=8, causal=causal), positions, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(DynamicPositionBias(2, hidden=8), positions, dtype)


def test_repr_shows_causal():
    assert "causal=False" in repr(DynamicPositionBias(2, causal=False))
