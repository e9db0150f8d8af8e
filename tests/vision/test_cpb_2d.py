"""Swin V2's 2-D continuous position bias against a double loop over patch pairs, and its grid transfer."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import import_peer

from posenc.models import ViT
from posenc.vision import ContinuousPositionBias2d


def spaced(x: float, trained: int) -> float:
    return math.copysign(math.log2(1 + abs(x) * 8 / (trained - 1)) / 3, x) if x else 0.0


def loop_reference(module, grid: tuple[int, int], trained: tuple[int, int]):
    """Yield ``(a, b, h)``: patches a, b of ``grid`` and the bias 16 sigmoid(MLP(offsets)) between them,
    written from the paper pair by pair, the offsets log-spaced for a network trained on ``trained``."""
    lin1, lin2 = module.mlp.net[0], module.mlp.net[2]
    coords = [(r, c) for r in range(grid[0]) for c in range(grid[1])]
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            x = torch.tensor([spaced(ya - yb, trained[0]), spaced(xa - xb, trained[1])], dtype=torch.float64)
            yield a, b, 16 * torch.sigmoid(lin2(torch.relu(lin1(x))))


def test_matches_a_double_loop_over_patches():
    torch.manual_seed(0)
    module = ContinuousPositionBias2d(2, (2, 3), num_prefix_tokens=1, hidden=8).double()
    bias = module()
    for a, b, h in loop_reference(module, (2, 3), (2, 3)):
        torch.testing.assert_close(bias[0, :, a + 1, b + 1].double(), h, atol=1e-6, rtol=1e-6)
    assert bias[0, :, 0].abs().max() == 0 and bias[0, :, :, 0].abs().max() == 0  # the class token


def test_a_float64_network_gets_exact_offsets():
    """Float64 weights see the log-spaced offsets in float64 (they were rounded to float32: 2.4e-7 off)."""
    torch.manual_seed(0)
    module = ContinuousPositionBias2d(2, (3, 4), pretrained_grid=(4, 5), hidden=8, dtype=torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    bias = module()
    for a, b, h in loop_reference(module, (3, 4), (4, 5)):
        torch.testing.assert_close(bias[0, :, a, b], h, atol=1e-13, rtol=0)


def test_a_trained_network_runs_on_another_grid():
    small = ContinuousPositionBias2d(2, 3, hidden=8)
    big = ContinuousPositionBias2d(2, 5, pretrained_grid=3, hidden=8)
    big.load_state_dict(small.state_dict())
    # offsets that exist on both grids get the same bias
    torch.testing.assert_close(big()[0, :, 0, 1], small()[0, :, 0, 1])


def test_in_the_vit():
    model = ViT(16, 4, 10, dim=16, heads=2, position="cpb_2d", hidden=8)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


# -- parity with timm ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "grid, pretrained", [((4, 4), None), ((3, 5), None), ((6, 6), (4, 4)), ((2, 1), None), ((5, 3), (3, 2))]
)
def test_matches_timm_swin_v2_window_attention(grid, pretrained):
    """timm's Swin V2 ``WindowAttention``: its log-spaced coordinate table, ``cpb_mlp`` (weights copied),
    relative index and ``16 sigmoid``, as its forward composes them."""
    swin = import_peer("timm.models.swin_transformer_v2")
    torch.manual_seed(0)
    peer = swin.WindowAttention(dim=12, num_heads=3, window_size=grid, pretrained_window_size=pretrained or (0, 0))
    peer = peer.double()
    ours = ContinuousPositionBias2d(3, grid, pretrained_grid=pretrained).double()
    with torch.no_grad():
        ours.mlp.net[0].weight.copy_(peer.cpb_mlp[0].weight)
        ours.mlp.net[0].bias.copy_(peer.cpb_mlp[0].bias)
        ours.mlp.net[2].weight.copy_(peer.cpb_mlp[2].weight)
    # the same float32 coordinates up to an ulp (ours are formed in float64, timm's in float32)
    torch.testing.assert_close(ours.offsets.double(), peer.relative_coords_table.reshape(-1, 2), rtol=0, atol=2.5e-7)
    n = grid[0] * grid[1]
    table = peer.cpb_mlp(peer.relative_coords_table).view(-1, 3)
    want = 16 * torch.sigmoid(table[peer.relative_position_index.view(-1)].view(n, n, 3).permute(2, 0, 1))
    torch.testing.assert_close(ours()[0].double(), want, rtol=0, atol=1e-5)  # ours returns float32


# -- parity with transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "grid, pretrained", [((4, 4), None), ((3, 5), None), ((6, 6), (4, 4)), ((5, 3), (3, 2))]
)
def test_matches_transformers_swinv2_self_attention(grid, pretrained):
    """transformers' Swin V2 ``Swinv2SelfAttention``: its log-spaced coordinate table,
    ``continuous_position_bias_mlp`` (weights copied), relative index and ``16 sigmoid``, as its forward
    composes them. (A window one patch wide is left out: transformers divides its offsets by
    ``window - 1 = 0`` and gets NaN there.)"""
    transformers = pytest.importorskip("transformers")
    swinv2 = pytest.importorskip("transformers.models.swinv2.modeling_swinv2")
    torch.manual_seed(0)
    peer = swinv2.Swinv2SelfAttention(
        transformers.Swinv2Config(), dim=12, num_heads=3, window_size=grid, pretrained_window_size=pretrained or (0, 0)
    ).double()
    ours = ContinuousPositionBias2d(3, grid, pretrained_grid=pretrained).double()
    mlp = peer.continuous_position_bias_mlp
    with torch.no_grad():
        ours.mlp.net[0].weight.copy_(mlp[0].weight)
        ours.mlp.net[0].bias.copy_(mlp[0].bias)
        ours.mlp.net[2].weight.copy_(mlp[2].weight)
    # the same float32 coordinates up to an ulp (ours are formed in float64, transformers' in float32)
    torch.testing.assert_close(ours.offsets.double(), peer.relative_coords_table.reshape(-1, 2).double(), rtol=0, atol=2.5e-7)
    n = grid[0] * grid[1]
    table = mlp(peer.relative_coords_table.double()).view(-1, 3)
    want = 16 * torch.sigmoid(table[peer.relative_position_index.view(-1)].view(n, n, 3).permute(2, 0, 1))
    torch.testing.assert_close(ours()[0].double(), want, rtol=0, atol=1e-5)  # ours returns float32


def test_blocked_kernel_refuses_a_bias_of_more_heads():
    # the gathered score_mod read the bias by the kernel's head: a 3-head bias on 2-head queries
    # ran with its first two heads without a word
    from posenc.attention import attend
    from posenc.core.positions import Positions

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen) for _ in range(3))
    with pytest.raises(ValueError, match="`q` has 2 heads but the bias was built for heads=3"):
        attend(q, k, v, position=ContinuousPositionBias2d(3, (2, 2), hidden=8), backend="blocked",
               q_positions=Positions(4), k_positions=Positions(4))


def test_repr_shows_the_prefix_tokens():
    assert "num_prefix_tokens=1" in repr(ContinuousPositionBias2d(2, grid=(3, 3), num_prefix_tokens=1))
