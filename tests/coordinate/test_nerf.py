"""NeRF encoding against a float64 transcription of Mildenhall et al. (2020), section 5.1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.coordinate import NeRFEncoding
from posenc.functional import nerf_encoding


def reference(points, num_frequencies, include_input=True, use_pi=True, bands="log"):
    """gamma(p) channel by channel: [p, sin(f_0 p_0..p_c), cos(f_0 p_0..p_c), sin(f_1 ...), ...]."""
    rows = []
    for p in points:
        row = list(p) if include_input else []
        for l in range(num_frequencies):
            if bands == "log":
                f = 2.0**l
            else:
                f = 1.0 + l * (2.0 ** (num_frequencies - 1) - 1.0) / max(num_frequencies - 1, 1)
            if use_pi:
                f *= math.pi
            row += [math.sin(f * v) for v in p]
            row += [math.cos(f * v) for v in p]
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("include_input", [True, False])
@pytest.mark.parametrize("use_pi", [True, False])
@pytest.mark.parametrize("bands", ["log", "linear"])
@pytest.mark.parametrize("num_frequencies", [1, 4])
def test_matches_float64_reference(include_input, use_pi, bands, num_frequencies):
    x = torch.rand(6, 3, dtype=torch.float64) * 4 - 2
    got = nerf_encoding(x, num_frequencies, include_input=include_input, use_pi=use_pi, bands=bands)
    want = reference(x.tolist(), num_frequencies, include_input, use_pi, bands)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    module = NeRFEncoding(3, num_frequencies, include_input=include_input, use_pi=use_pi, bands=bands)
    out = module(x)
    assert module.out_dim == out.shape[-1] == want.shape[-1]
    np.testing.assert_allclose(out.numpy(), want, atol=1e-12)
    # float32 input: exact angles of the rounded input, only the result rounded
    x32 = x.float()
    want32 = reference(x32.double().tolist(), num_frequencies, include_input, use_pi, bands)
    np.testing.assert_allclose(module(x32).numpy(), want32, atol=1e-6)


def test_official_channel_order_for_two_coordinates():
    # the official Embedder concatenates [x, sin(x), cos(x), sin(2x), cos(2x)] with x the whole vector
    x = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    got = nerf_encoding(x, 2, use_pi=False)[0]
    want = torch.cat([x[0], (x[0]).sin(), (x[0]).cos(), (2 * x[0]).sin(), (2 * x[0]).cos()])
    torch.testing.assert_close(got, want)


def test_paper_presets():
    assert NeRFEncoding.for_positions().out_dim == 63
    assert NeRFEncoding.for_directions().out_dim == 27
    assert NeRFEncoding.for_directions(use_pi=False).use_pi is False


@given(
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    in_dim=st.integers(1, 4),
    num_frequencies=st.integers(0, 5),
    include_input=st.booleans(),
)
def test_any_leading_shape_and_out_dim(shape, in_dim, num_frequencies, include_input):
    if num_frequencies == 0 and not include_input:
        return
    module = NeRFEncoding(in_dim, num_frequencies, include_input=include_input)
    x = torch.randn(*shape, in_dim)
    out = module(x)
    assert out.shape == (*shape, module.out_dim)
    # each point is encoded on its own
    torch.testing.assert_close(out.reshape(-1, module.out_dim), module(x.reshape(-1, in_dim)))


@given(p=st.floats(-3, 3), l=st.integers(0, 6))
def test_octave_doubling_property(p, l):
    # band l + 1 at p is band l at 2p: sin(2^(l+1) pi p) = sin(2^l pi (2p))
    a = nerf_encoding(torch.tensor([[p]], dtype=torch.float64), l + 2, include_input=False)[0]
    b = nerf_encoding(torch.tensor([[2 * p]], dtype=torch.float64), l + 2, include_input=False)[0]
    torch.testing.assert_close(a[2 * (l + 1) : 2 * (l + 2)], b[2 * l : 2 * (l + 1)], atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_float64_at_large_coordinates(dtype):
    x = torch.tensor([[123.5, -900.25, 1000.0]], dtype=dtype)
    got = nerf_encoding(x, 10)
    want = torch.from_numpy(reference(x.double().tolist(), 10))
    assert got.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.double(), want.to(got.device), atol=eps, rtol=eps)
    # the module in half precision keeps its frequencies in float64
    module = NeRFEncoding(3, 10).to(dtype)
    assert module.frequencies.dtype == torch.float64
    torch.testing.assert_close(module(x), got)


def test_meta_device_then_to_empty():
    module = NeRFEncoding(3, 4, device="meta")
    assert module.out_dim == 27
    module.to_empty(device="cpu")
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(module(x), nerf_encoding(x, 4))


def test_state_dict_round_trip_holds_no_tables():
    module = NeRFEncoding(2, 3)
    assert module.state_dict() == {}
    other = NeRFEncoding(2, 3)
    other.load_state_dict(module.state_dict())
    x = torch.randn(4, 2)
    torch.testing.assert_close(other(x), module(x))


def test_registry():
    info = posenc.get("nerf")
    assert info.family == "coordinate" and "2003.08934" in info.paper
    assert isinstance(posenc.create("nerf", in_dim=2, num_frequencies=3), NeRFEncoding)


def test_bad_input():
    with pytest.raises(ValueError, match="num_frequencies"):
        nerf_encoding(torch.randn(2, 3), -1)
    with pytest.raises(ValueError, match="num_frequencies"):
        NeRFEncoding(3, -2)
    with pytest.raises(ValueError, match="num_frequencies"):
        NeRFEncoding(3, 0, include_input=False)
    with pytest.raises(ValueError, match="bands"):
        NeRFEncoding(3, 2, bands="octave")
    with pytest.raises(ValueError, match="in_dim"):
        NeRFEncoding(0, 2)
    with pytest.raises(ValueError, match="in_dim=3"):
        NeRFEncoding(3, 2)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="x"):
        nerf_encoding(torch.tensor(1.0), 2)
    with pytest.raises(ValueError, match="x"):
        nerf_encoding(torch.arange(3), 2)


@pytest.mark.parametrize("num_frequencies", [65, 10**12])
def test_constructor_refuses_more_bands_than_float64_resolves(num_frequencies):
    # refused by name before the (num_frequencies,) frequency buffer is allocated
    with pytest.raises(ValueError, match="`num_frequencies` must be <= 64"):
        NeRFEncoding(3, num_frequencies)
    with pytest.raises(ValueError, match="`num_frequencies` must be <= 64"):
        NeRFEncoding(3, num_frequencies, device="meta")


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_flags_must_be_true_or_false(flag):
    # bool("no") is True: the raw input used to be kept although the caller asked to leave it out
    for name in ("include_input", "use_pi"):
        with pytest.raises(TypeError, match=f"`{name}` must be True or False"):
            nerf_encoding(torch.zeros(2, 3), 2, **{name: flag})
        with pytest.raises(TypeError, match=f"`{name}` must be True or False"):
            NeRFEncoding(3, 2, **{name: flag})


def test_frequencies_refuse_a_flag_that_is_not_a_bool():
    # use_pi="no" multiplied the bands by pi (truthy), as NeRFEncoding(use_pi="no") refuses to
    from posenc.coordinate import nerf_frequencies

    with pytest.raises(TypeError, match="`use_pi` must be True or False, got str 'no'"):
        nerf_frequencies(4, use_pi="no")
