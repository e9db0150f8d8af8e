"""CoordConv: coordinate channels against linspace and a per-pixel float64 loop; layers; errors."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_loss_falls, train_losses
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import add_coords
from posenc.models import CNN
from posenc.spatial import AddCoords, CoordConv, CoordConvTranspose, coordinate_channels


def reference_coords(spatial: tuple[int, ...], with_r: bool) -> torch.Tensor:
    """Slow float64 transcription: channel a holds the coordinate of axis -1-a, i/(s-1)*2-1."""
    k = len(spatial)
    out = torch.zeros(k + int(with_r), *spatial, dtype=torch.float64)
    for index in torch.cartesian_prod(*[torch.arange(s) for s in spatial]).reshape(-1, k).tolist():
        vals = []
        for a in range(k):
            axis = k - 1 - a  # x is the last axis
            s, i = spatial[axis], index[axis]
            v = -1.0 if s == 1 else 2.0 * i / (s - 1) - 1.0
            vals.append(v)
            out[(a, *index)] = v
        if with_r:
            out[(k, *index)] = math.sqrt(sum(v * v for v in vals))
    return out


@pytest.mark.parametrize("spatial", [(5,), (4,), (3, 4), (4, 5), (1, 3), (2, 3, 5), (3, 2, 2)])
@pytest.mark.parametrize("with_r", [False, True])
def test_add_coords_matches_float64_reference(spatial, with_r):
    x = torch.randn(2, 3, *spatial, dtype=torch.float64)
    out = add_coords(x, with_r=with_r)
    assert out.shape == (2, 3 + len(spatial) + int(with_r), *spatial)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[0, 3:], reference_coords(spatial, with_r), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1, 3:], out[0, 3:])


@pytest.mark.parametrize("h, w", [(3, 5), (4, 6), (7, 2)])
def test_channels_equal_linspace_along_each_axis(h, w):
    out = add_coords(torch.zeros(1, 1, h, w))
    for row in range(h):
        torch.testing.assert_close(out[0, 1, row], torch.linspace(-1, 1, w))
    for col in range(w):
        torch.testing.assert_close(out[0, 2, :, col], torch.linspace(-1, 1, h))
    out3 = add_coords(torch.zeros(1, 1, 3, h, w))
    torch.testing.assert_close(out3[0, 3, :, 0, 0], torch.linspace(-1, 1, 3))
    torch.testing.assert_close(out3[0, 1, 1, 1], torch.linspace(-1, 1, w))


@given(st.integers(1, 6), st.integers(1, 6))
def test_coordinates_are_translation_free_of_content(h, w):
    # the coordinates do not depend on the input values, only on the grid
    a = add_coords(torch.randn(1, 2, h, w))[:, 2:]
    b = add_coords(torch.randn(1, 2, h, w) * 100)[:, 2:]
    torch.testing.assert_close(a, b)
    assert a.min() >= -1 and a.max() <= 1


def test_dtype_follows_input():
    assert add_coords(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_coordconv_shapes_and_transposed(dims):
    spatial = (5,) * dims
    conv = CoordConv(2, 4, 3, spatial_dims=dims, padding=1, with_r=True)
    assert conv(torch.randn(2, 2, *spatial)).shape == (2, 4, *spatial)
    up = CoordConvTranspose(2, 4, 2, spatial_dims=dims, stride=2)
    assert up(torch.randn(2, 2, *spatial)).shape == (2, 4, *(10,) * dims)
    assert AddCoords(dims, with_r=True).extra_channels == dims + 1


def test_coordconv_equals_conv_over_add_coords():
    conv = CoordConv(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(add_coords(x), conv.conv.weight, conv.conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref)


def test_meta_device_and_state_dict_round_trip():
    meta = CoordConv(3, 4, 3, device="meta")
    assert meta.conv.weight.device.type == "meta"
    meta.to_empty(device="cpu")
    a, b = CoordConv(3, 4, 3), CoordConv(3, 4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(a(x), b(x))


def test_registry_entry():
    info = get("coordconv")
    assert info.family == "spatial" and "1807.03247" in info.paper and info.cls is CoordConv


def test_bad_input():
    with pytest.raises(ValueError, match="x"):
        add_coords(torch.zeros(2, 3))  # no spatial axis
    with pytest.raises(ValueError, match="x"):
        add_coords(torch.zeros(1, 1, 2, 2, 2, 2))  # 4 spatial axes
    with pytest.raises(ValueError, match="x"):
        add_coords(torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="spatial_dims"):
        AddCoords(4)
    with pytest.raises(ValueError, match="dtype"):  # int64 gave [-1, 0, 0, 0, 1] for 5 pixels
        coordinate_channels((5,), dtype=torch.long)
    for spatial in (5, None, "ab", (2, 2, 2, 2)):  # len() of an int or None failed with a bare TypeError
        with pytest.raises(ValueError, match="`spatial` must be a sequence of 1, 2 or 3 axis sizes"):
            coordinate_channels(spatial)
    with pytest.raises(ValueError, match="`spatial`=.*more than"):  # the allocator's error before
        coordinate_channels((10**6, 10**6))
    with pytest.raises(ValueError, match="in_channels"):
        CoordConv(0, 4)
    with pytest.raises(ValueError, match="in_channels"):
        CoordConv(3, 4)(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="x"):
        CoordConv(3, 4)(torch.randn(3, 5, 5))


def test_trains_in_reference_cnn():
    # target: a position-dependent map (x coordinate times y) from a content-free input
    torch.manual_seed(0)
    target = add_coords(torch.zeros(1, 0, 8, 8))
    target = (target[:, :1] * target[:, 1:2]).expand(8, -1, -1, -1)
    model = CNN(1, 1, width=8, depth=1, position="coordconv")
    losses = train_losses(
        model, lambda: (torch.randn(8, 1, 8, 8) * 0.1, target), torch.nn.functional.mse_loss, steps=40, lr=1e-2
    )
    assert_loss_falls(losses, factor=0.5)


@pytest.mark.parametrize("flag", ["no", 0])
def test_with_r_must_be_true_or_false(flag):
    with pytest.raises(TypeError, match="`with_r` must be True or False"):
        add_coords(torch.zeros(1, 2, 3, 3), with_r=flag)
    with pytest.raises(TypeError, match="`with_r` must be True or False"):
        CoordConv(2, 3, 3, with_r=flag)


def test_an_input_smaller_than_the_kernel_is_refused_by_name():
    # torch's "Kernel size can't be greater than actual input size" named no argument
    with pytest.raises(ValueError, match=r"`x` must be at least 5 wide along spatial axis 0 for kernel_size=5"):
        CoordConv(2, 3, 5)(torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"`x` must be at least 5 wide .* dilation 2"):
        CoordConv(2, 3, 3, dilation=2)(torch.zeros(2, 2, 4, 9))
    assert CoordConv(2, 3, 5, padding=2)(torch.zeros(2, 2, 1, 1)).shape == (2, 3, 1, 1)
    assert CoordConv(2, 3, 5, padding="same")(torch.zeros(2, 2, 1, 1)).shape == (2, 3, 1, 1)


@pytest.mark.parametrize(("name", "value"), [("stride", 0), ("dilation", 0), ("padding", -1), ("output_padding", -1)])
def test_convolution_arguments_torch_only_checks_when_called_are_refused_when_built(name, value):
    cls = CoordConvTranspose if name == "output_padding" else CoordConv
    with pytest.raises(ValueError, match=f"`{name}` must be >= "):
        cls(2, 3, 3, **{name: value})


def test_coordinate_channels_refuse_a_flag_that_is_not_a_bool():
    # with_r="no" appended the radius channel (truthy), as add_coords(with_r="no") refuses to
    with pytest.raises(TypeError, match="`with_r` must be True or False, got str 'no'"):
        coordinate_channels((3, 4), with_r="no")
