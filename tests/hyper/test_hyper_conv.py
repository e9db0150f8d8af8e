"""Position-conditioned hypernetwork convolution against float64 loops (Ha et al. 2016, section 3.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.functional import conv2d_per_position
from posenc.hyper import HyperConv2d, HyperKernel, grid_coordinates, grid_encoding


def reference_hyper_kernel(module, z):
    """a_i = W_i z + b_i; K^i = W_out a_i + b_out, reshaped to (out, k, k); K = [K^1 .. K^in] on axis 1."""
    w_in, b_in = module.w_in.weight.detach().double().numpy(), module.w_in.bias.detach().double().numpy()
    w_out, b_out = module.w_out.weight.detach().double().numpy(), module.w_out.bias.detach().double().numpy()
    d, k, o = module.hidden, module.kernel_size, module.out_channels
    kernel = np.zeros((o, module.in_channels, k, k))
    for i in range(module.in_channels):
        a_i = w_in[i * d : (i + 1) * d] @ z + b_in[i * d : (i + 1) * d]
        kernel[:, i] = (w_out @ a_i + b_out).reshape(o, k, k)
    return kernel


def reference_conv(x, kernels):
    """out[b, o, y, x] = sum_{c, p, q} K[y, x, o, c, p, q] * x_padded[b, c, y + p, x + q]."""
    b, _c, h, w = x.shape
    o, k = kernels.shape[2], kernels.shape[-1]
    r = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    out = np.zeros((b, o, h, w))
    for n in range(b):
        for y in range(h):
            for xx in range(w):
                for oo in range(o):
                    out[n, oo, y, xx] = np.sum(kernels[y, xx, oo] * xp[n, :, y : y + k, xx : xx + k])
    return out


def reference_nerf_grid(h, w, num_frequencies):
    """[u, v, sin(2^l pi u), sin(2^l pi v), cos(2^l pi u), cos(2^l pi v) ...] for u, v in [-1, 1]."""
    out = np.zeros((h, w, 2 * (2 * num_frequencies + 1)))
    for y in range(h):
        for x in range(w):
            p = [2 * y / (h - 1) - 1, 2 * x / (w - 1) - 1]
            row = list(p)
            for l in range(num_frequencies):
                row += [math.sin(2**l * math.pi * v) for v in p] + [math.cos(2**l * math.pi * v) for v in p]
            out[y, x] = row
    return out


def test_hyper_kernel_matches_ha_et_al_formula():
    module = HyperKernel(5, 3, 2, 3, hidden=4, dtype=torch.float64)
    z = torch.randn(5, dtype=torch.float64)
    got = module(z)
    assert got.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(got.detach().numpy(), reference_hyper_kernel(module, z.numpy()), atol=1e-12)
    assert module(torch.randn(4, 2, 5, dtype=torch.float64)).shape == (4, 2, 2, 3, 3, 3)


def test_per_position_convolution_matches_float64_loops():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    kernels = torch.randn(5, 4, 2, 3, 3, 3, dtype=torch.float64)
    got = conv2d_per_position(x, kernels)
    np.testing.assert_allclose(got.numpy(), reference_conv(x.numpy(), kernels.numpy()), atol=1e-12)


@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 3), o=st.integers(1, 3), k=st.sampled_from([1, 3, 5]))
def test_equal_kernels_everywhere_give_an_ordinary_convolution(h, w, c, o, k):
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    kernel = torch.randn(o, c, k, k, dtype=torch.float64)
    got = conv2d_per_position(x, kernel.expand(h, w, o, c, k, k))
    torch.testing.assert_close(got, F.conv2d(x, kernel, padding=k // 2))


def test_grid_encodings():
    torch.testing.assert_close(grid_encoding(4, 3, num_frequencies=2), torch.from_numpy(reference_nerf_grid(4, 3, 2)))
    sin = grid_encoding(3, 5, position="sinusoidal", pos_dim=8)
    assert sin.shape == (3, 5, 8)
    torch.testing.assert_close(sin[2, 4], torch.cat((posenc.functional.sinusoidal(torch.tensor([2.0]), 4)[0],
                                                     posenc.functional.sinusoidal(torch.tensor([4.0]), 4)[0])).double())


def test_layer_matches_float64_reference_end_to_end():
    layer = HyperConv2d(2, 3, 3, num_frequencies=2, hidden=4, dtype=torch.float64)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    z = reference_nerf_grid(4, 5, 2)
    kernels = np.stack([np.stack([reference_hyper_kernel(layer.hyper, z[y, xx]) for xx in range(5)]) for y in range(4)])
    want = reference_conv(x.numpy(), kernels) + layer.bias.detach().numpy()[:, None, None]
    out = layer(x)
    assert layer.out_dim == out.shape[1] == 3
    np.testing.assert_allclose(out.detach().numpy(), want, atol=1e-10)


@pytest.mark.parametrize("position", ["nerf", "sinusoidal"])
def test_explicit_positions_equal_implicit(position):
    layer = HyperConv2d(2, 3, 3, position=position, pos_dim=8)
    x = torch.randn(2, 2, 5, 6)
    explicit = grid_coordinates(5, 6, position=position)
    torch.testing.assert_close(layer(x, positions=explicit), layer(x))
    if position == "sinusoidal":  # integer pixel indices may be given as an int tensor
        torch.testing.assert_close(layer(x, positions=explicit.long()), layer(x))


def test_a_crop_with_its_positions_matches_the_full_image_inside():
    layer = HyperConv2d(1, 2, 3, position="sinusoidal", pos_dim=8)
    x = torch.randn(1, 1, 9, 10)
    full = layer(x)
    crop = layer(x[..., 2:7, 3:9], positions=grid_coordinates(9, 10, position="sinusoidal")[2:7, 3:9])
    # away from the crop's border (where zero padding differs) the pixels see the same kernels and inputs
    torch.testing.assert_close(crop[..., 1:-1, 1:-1], full[..., 3:6, 4:8])
    assert not torch.allclose(layer(x[..., 2:7, 3:9])[..., 1:-1, 1:-1], full[..., 3:6, 4:8])


def test_modulation_starts_as_the_shared_convolution():
    layer = HyperConv2d(2, 3, 3, mode="modulation", position="sinusoidal", pos_dim=8)
    x = torch.randn(2, 2, 6, 7)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))


def location_dependent_target(x):
    """Left edge: copy the left neighbour; right edge: vertical difference; linear blend in between."""
    copy_left = torch.zeros(1, 1, 3, 3)
    copy_left[0, 0, 1, 0] = 1.0
    vertical = torch.zeros(1, 1, 3, 3)
    vertical[0, 0, 0, 1], vertical[0, 0, 2, 1] = 1.0, -1.0
    u = torch.linspace(0, 1, x.shape[-1])
    return (1 - u) * F.conv2d(x, copy_left, padding=1) + u * F.conv2d(x, vertical, padding=1)


def train(model, target, steps=200):
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(8, 1, 12, 12, generator=gen)
        loss = F.mse_loss(model(x), target(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(16, 1, 12, 12, generator=gen)
    with torch.no_grad():
        return F.mse_loss(model(x), target(x)).item()


def test_position_conditioned_kernels_beat_a_shared_convolution():
    torch.manual_seed(0)
    hyper = train(HyperConv2d(1, 1, 3, num_frequencies=2), location_dependent_target)
    torch.manual_seed(0)
    shared = train(torch.nn.Conv2d(1, 1, 3, padding=1), location_dependent_target)
    assert shared > 0.15  # a single kernel cannot do both jobs
    assert hyper < 0.1 * shared, (hyper, shared)


def test_modulation_learns_a_gain_that_varies_across_the_image():
    def target(x):
        kernel = torch.zeros(1, 1, 3, 3)
        kernel[0, 0, 1, 1], kernel[0, 0, 1, 2] = 1.0, 0.5
        # the gain runs from -1 (top row) to 1 (bottom row)
        return torch.linspace(-1, 1, x.shape[-2])[:, None] * F.conv2d(x, kernel, padding=1)

    torch.manual_seed(0)
    hyper = train(HyperConv2d(1, 1, 3, mode="modulation", num_frequencies=1), target, steps=150)
    torch.manual_seed(0)
    shared = train(torch.nn.Conv2d(1, 1, 3, padding=1), target, steps=150)
    assert shared > 0.3
    assert hyper < 0.1 * shared, (hyper, shared)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layer(dtype):
    layer = HyperConv2d(1, 2, 3)
    x = torch.randn(2, 1, 6, 6)
    want = layer(x)
    layer.to(dtype)
    got = layer(x.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("mode", ["kernel", "modulation"])
def test_meta_device_and_state_dict(mode):
    layer = HyperConv2d(2, 3, 3, mode=mode, device="meta")
    assert layer.out_dim == 3
    layer.to_empty(device="cpu")
    for module in layer.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    layer.reset_parameters()
    x = torch.randn(1, 2, 5, 5)
    assert torch.isfinite(layer(x)).all()
    other = HyperConv2d(2, 3, 3, mode=mode)
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))


def test_registry():
    info = posenc.get("hyper_conv")
    assert info.family == "hyper" and "1609.09106" in info.paper
    assert isinstance(posenc.create("hyper_conv", in_channels=2, out_channels=4), HyperConv2d)


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size"):
        HyperConv2d(1, 1, 4)
    with pytest.raises(ValueError, match="num_frequencies"):
        HyperConv2d(1, 1, 3, num_frequencies=-1)
    with pytest.raises(ValueError, match="pos_dim"):
        HyperConv2d(1, 1, 3, position="sinusoidal", pos_dim=6)
    with pytest.raises(ValueError, match="position"):
        HyperConv2d(1, 1, 3, position="learned")
    with pytest.raises(ValueError, match="mode"):
        HyperConv2d(1, 1, 3, mode="dynamic")
    with pytest.raises(ValueError, match="in_channels=2"):
        HyperConv2d(2, 1, 3)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="`x`"):
        HyperConv2d(1, 1, 3)(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="kernels"):
        conv2d_per_position(torch.randn(1, 1, 4, 4), torch.randn(4, 3, 1, 1, 3, 3))
    with pytest.raises(ValueError, match="positions"):
        HyperConv2d(1, 1, 3)(torch.randn(1, 1, 4, 4), positions=torch.zeros(4, 5, 2))
    with pytest.raises(ValueError, match="positions"):
        HyperConv2d(1, 1, 3)(torch.randn(1, 1, 4, 4), positions=torch.zeros(4, 4, 2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="embed_dim"):
        HyperKernel(4, 1, 1)(torch.randn(3))


def test_sizes_past_memory_raise_naming_the_argument():
    # the per-pixel kernels, the unfolded patches and the coordinate grid used to reach the allocator
    layer = HyperConv2d(64, 64, 3)
    with pytest.raises(ValueError, match="`x`.*more than"):
        layer(torch.zeros(1, 64, 1, 1).expand(1, 64, 4096, 4096))
    with pytest.raises(ValueError, match="`positions`.*more than"):
        layer.generate_kernels(torch.zeros(1, 1, 2).expand(8192, 8192, 2))
    with pytest.raises(ValueError, match="`x`.*more than"):
        conv2d_per_position(torch.zeros(1, 1, 1, 1).expand(64, 64, 2048, 2048), torch.zeros(1).expand(2048, 2048, 1, 64, 3, 3))
    with pytest.raises(ValueError, match="`height`.*more than"):
        grid_encoding(10**6, 10**6)


def test_hyper_kernel_refuses_an_embedding_of_another_dtype_by_name():
    # used to fail inside the linear layer ('mat1 and mat2 must have the same dtype, but got Double and Float')
    with pytest.raises(ValueError, match="`z` has dtype torch.float64 but the hypernetwork's parameters are torch.float32"):
        HyperKernel(4, 2, 3)(torch.randn(5, 4, dtype=torch.float64))


def test_compiles_in_one_graph_when_the_image_size_changes():
    # grid_coordinates' memory check named its largest size with max(sizes, key=...), which dynamo
    # cannot trace once height and width are symbols: a second image size failed to compile
    torch._dynamo.reset()
    conv = HyperConv2d(1, 2, 3, num_frequencies=2, hidden=4)
    compiled = torch.compile(conv, fullgraph=True, backend="eager")
    with torch.no_grad():
        for shape in ((2, 1, 5, 6), (1, 1, 7, 4), (2, 1, 6, 9)):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
            torch.testing.assert_close(compiled(x), conv(x))


def test_nerf_bands_past_the_encodings_limit_are_refused_when_built():
    # HyperConv2d(num_frequencies=65) was built (its hypernetwork sized for 65 bands) and refused only at its
    # first call, by nerf_encoding; the sinusoidal position does not read num_frequencies
    with pytest.raises(ValueError, match="`num_frequencies` must be <= 64, got 65"):
        HyperConv2d(2, 3, 3, num_frequencies=65)
    with pytest.raises(ValueError, match="`num_frequencies` must be <= 64, got 65"):
        grid_encoding(2, 2, num_frequencies=65)
    assert HyperConv2d(2, 3, 3, num_frequencies=64)(torch.zeros(1, 2, 3, 3)).shape == (1, 3, 3, 3)
    HyperConv2d(2, 3, 3, position="sinusoidal", num_frequencies=65)


def test_generate_kernels_names_positions_that_are_not_a_tensor():
    # a list of coordinates failed with AttributeError: 'list' object has no attribute 'to'
    layer = HyperConv2d(2, 3, 3)
    with pytest.raises(TypeError, match="`positions` must be a torch.Tensor, got list"):
        layer.generate_kernels([[0.0, 0.0]])
    assert layer.generate_kernels(torch.zeros(4, 2)).shape == (4, 3, 2, 3, 3)


def test_encode_coordinates_names_its_own_argument():
    # refused as `positions`, HyperConv2d.generate_kernels' argument, which encode_coordinates does not have
    from posenc.hyper import encode_coordinates

    with pytest.raises(ValueError, match="`coords` must have a last dimension of 2"):
        encode_coordinates(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="`coords` must be finite"):
        encode_coordinates(torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="`positions` must have a last dimension of 2"):
        HyperConv2d(1, 2, 3).generate_kernels(torch.zeros(2, 2, 3))
