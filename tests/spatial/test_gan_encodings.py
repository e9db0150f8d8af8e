"""Explicit generator inputs of Xu et al.: Cartesian grid, 2-D sinusoid, multi-scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import add_coords
from posenc.spatial import (
    CartesianGridInput,
    MultiScalePositionalInput,
    SinusoidalGridInput,
    StyleGenerator,
    cartesian_grid,
    sinusoidal_grid,
)


def reference_sinusoidal_grid(h, w, channels, base=10000.0):
    half = channels // 2
    out = torch.zeros(channels, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for a, p in enumerate((j - w // 2, i - h // 2)):  # x block, then y block
                for f in range(half // 2):
                    angle = p / base ** (2 * f / half)
                    out[a * half + f, i, j] = math.sin(angle)
                    out[a * half + half // 2 + f, i, j] = math.cos(angle)
    return out


@pytest.mark.parametrize("h, w, channels", [(4, 4, 8), (5, 3, 16), (1, 6, 4)])
def test_sinusoidal_grid_matches_float64_reference(h, w, channels):
    out = sinusoidal_grid((h, w), channels)
    assert out.shape == (channels, h, w) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_sinusoidal_grid(h, w, channels), rtol=0, atol=1e-6)


def test_cartesian_grid_is_the_coordconv_channels():
    for h, w in [(4, 4), (3, 6)]:
        ref = torch.zeros(2, h, w, dtype=torch.float64)
        for i in range(h):
            for j in range(w):
                ref[0, i, j], ref[1, i, j] = -1 + 2 * j / (w - 1), -1 + 2 * i / (h - 1)
        torch.testing.assert_close(cartesian_grid((h, w)).double(), ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(cartesian_grid((h, w)), add_coords(torch.zeros(1, 0, h, w))[0])


@given(st.integers(1, 6), st.integers(1, 3))
def test_larger_grid_extends_the_smaller_one_at_the_centre(side, grow):
    small = sinusoidal_grid((side, side), 8)
    big = sinusoidal_grid((side + 2 * grow, side + 2 * grow), 8)
    torch.testing.assert_close(big[:, grow : grow + side, grow : grow + side], small)


def test_inputs_have_the_constant_interface():
    for module in (CartesianGridInput(4), SinusoidalGridInput(8, 4), MultiScalePositionalInput(8)):
        out = module(3)
        assert out.shape == (3, module.out_channels, 4, 4)
        assert module(torch.zeros(2, 5), size=(6, 5)).shape == (2, module.out_channels, 6, 5)


def test_multiscale_sizes_and_sampling():
    ms = MultiScalePositionalInput(8, sizes=[(4, 4), (6, 6)])
    torch.testing.assert_close(ms(1, size=(6, 6))[0], sinusoidal_grid((6, 6), 8))
    gen = torch.Generator().manual_seed(0)
    seen = {ms.sample_size(gen) for _ in range(20)}
    assert seen == {(4, 4), (6, 6)}
    cart = MultiScalePositionalInput(kind="cartesian", sizes=[4])
    assert cart.out_channels == 2 and cart(1).shape == (1, 2, 4, 4)


def test_meta_device_rebuilds_tables():
    ms = MultiScalePositionalInput(8, sizes=[(4, 4), (5, 5)], device="meta")
    ms.to_empty(device="cpu")
    torch.testing.assert_close(ms(1, size=(5, 5))[0], sinusoidal_grid((5, 5), 8))
    assert ms.state_dict() == {}


def test_registry_entry():
    info = get("gan_multiscale")
    assert info.family == "spatial" and "2012.05217" in info.paper and info.cls is MultiScalePositionalInput


def test_bad_input():
    with pytest.raises(ValueError, match="channels"):
        SinusoidalGridInput(6)
    with pytest.raises(ValueError, match="kind"):
        MultiScalePositionalInput(8, kind="polar")
    with pytest.raises(ValueError, match="sizes"):
        MultiScalePositionalInput(8, sizes=[])
    for sizes in (4.0, None, torch.tensor([4, 6])):  # "object of type 'float' has no len()" before
        with pytest.raises(ValueError, match="`sizes` must be a non-empty sequence of grid sizes"):
            MultiScalePositionalInput(8, sizes=sizes)
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        MultiScalePositionalInput(8, sizes=[4, (0, 4)])
    with pytest.raises(ValueError, match="size"):
        CartesianGridInput(4)(2, size=(3, 4, 5))
    with pytest.raises(ValueError, match="batch"):
        CartesianGridInput(4)(-1)


def test_generator_trains_at_several_scales():
    torch.manual_seed(0)
    gen = StyleGenerator(8, 8, 16, 1, input="gan_multiscale", sizes=[(4, 4), (6, 6)], upsamples=1)
    z = torch.randn(4, 8)
    # targets: one smooth pattern per latent, rendered at 8x8 and 12x12
    targets = {}
    for side in (8, 12):
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        targets[side] = torch.stack([torch.sin(3 * xs * (k + 1) / 4 + ys) for k in range(4)]).unsqueeze(1)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    losses = []
    for step in range(60):
        size = gen.input.sizes[step % 2]
        out = gen(z, size=size)
        loss = F.mse_loss(out, targets[2 * size[0]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert_loss_falls(losses, factor=0.5, window=6)


@pytest.mark.parametrize("kind", ["cartesian", "sinusoidal"])
def test_batch_and_size_at_the_edges(kind):
    grid = MultiScalePositionalInput(4, kind=kind, sizes=[(4, 4)])
    assert grid(0, size=5).shape == (0, grid.out_channels, 5, 5)
    with pytest.raises(ValueError, match="`batch` must be an int or a tensor whose first axis"):
        grid(torch.tensor(2))
    with pytest.raises(ValueError, match=r"`size`=\(1000000, 1000000\) needs a .* more than the"):
        grid(2, size=10**6)  # was the allocator's error


def test_repr_shows_the_base():
    assert "base=100.0" in repr(MultiScalePositionalInput(4, sizes=[(4, 4)], base=100.0))
