"""Dynamic position bias: an MLP of the (log) offset, evaluated once per offset, equal to a float64 transcription."""

from __future__ import annotations

import pytest
import torch

from posenc.bias import DynamicPositionBias
from posenc.core.positions import Positions


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("log", [True, False])
def test_matches_the_mlp_applied_pair_by_pair(causal, log):
    torch.manual_seed(0)
    module = DynamicPositionBias(3, hidden=8, depth=2, log_distance=log, causal=causal).double()
    bias = module(4, 6, offset=2)
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
            torch.testing.assert_close(bias[0, :, i, j].double(), h, atol=1e-6, rtol=1e-6)


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
