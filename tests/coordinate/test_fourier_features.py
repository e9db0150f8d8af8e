"""Fourier feature mappings against a float64 transcription of Tancik et al. (2020), section 6.1."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.coordinate import FourierFeatures, gaussian_matrix, positional_matrix
from posenc.functional import fourier_features


def reference(points, B):
    """gamma(v) = [cos(2 pi b_1.v), ..., cos(2 pi b_m.v), sin(2 pi b_1.v), ..., sin(2 pi b_m.v)]."""
    rows = []
    for v in points:
        dots = [sum(b_k * v_k for b_k, v_k in zip(b, v)) for b in B]
        rows.append([math.cos(2 * math.pi * d) for d in dots] + [math.sin(2 * math.pi * d) for d in dots])
    return np.array(rows)


def paper_positional(in_dim, m, sigma):
    """Rows sigma^(j/m) e_k, j outer, k inner, written out with loops."""
    rows = []
    for j in range(m):
        for k in range(in_dim):
            row = [0.0] * in_dim
            row[k] = sigma ** (j / m)
            rows.append(row)
    return rows


def test_function_matches_float64_reference():
    x = torch.rand(5, 3, dtype=torch.float64)
    B = torch.randn(7, 3, dtype=torch.float64) * 4
    got = fourier_features(x, B)
    assert got.shape == (5, 14) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference(x.tolist(), B.tolist()), atol=1e-12)


@pytest.mark.parametrize("mapping", ["basic", "positional", "gaussian"])
def test_modules_match_float64_reference(mapping):
    x = torch.rand(4, 2, dtype=torch.float64) * 2 - 1
    module = FourierFeatures(2, mapping, num_features=5, sigma=8.0, seed=3)
    if mapping == "basic":
        B = [[1.0, 0.0], [0.0, 1.0]]  # [cos 2 pi v, sin 2 pi v]
    elif mapping == "positional":
        B = paper_positional(2, 5, 8.0)
    else:
        B = module.B.double().tolist()
    out = module(x)
    assert module.out_dim == out.shape[-1] == 2 * len(B)
    np.testing.assert_allclose(out.numpy(), reference(x.tolist(), B), atol=1e-12)


def test_positional_scales_are_log_spaced_below_sigma():
    B = positional_matrix(1, 4, 16.0)
    torch.testing.assert_close(B[:, 0], torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64))


def test_seed_past_the_generator_range_is_refused_by_name():
    # 2**64 passed the check (an int >= 0) and failed in manual_seed: 'Overflow when unpacking long long'
    with pytest.raises(ValueError, match="`seed` must be <= 18446744073709551615, got 18446744073709551616"):
        FourierFeatures(2, num_features=3, seed=2**64)
    with pytest.raises(ValueError, match="`seed` must be <="):
        gaussian_matrix(2, 3, 1.0, seed=2**70)
    assert gaussian_matrix(2, 3, 1.0, seed=2**64 - 1).shape == (3, 2)


def test_gaussian_matrix_statistics_and_seed():
    B = gaussian_matrix(2, 4000, 3.0, seed=1)
    assert B.shape == (4000, 2)
    assert abs(B.mean().item()) < 0.1 and abs(B.std().item() - 3.0) < 0.1
    torch.testing.assert_close(gaussian_matrix(2, 10, 3.0, seed=1), gaussian_matrix(2, 10, 3.0, seed=1))
    assert not torch.equal(gaussian_matrix(2, 10, 3.0, seed=1), gaussian_matrix(2, 10, 3.0, seed=2))
    # the global generator plays no part
    torch.manual_seed(123)
    a = FourierFeatures(2, num_features=6, seed=4).B
    torch.manual_seed(456)
    torch.testing.assert_close(FourierFeatures(2, num_features=6, seed=4).B, a)


@given(shape=st.lists(st.integers(1, 3), max_size=3), in_dim=st.integers(1, 3), m=st.integers(1, 6))
def test_any_leading_shape(shape, in_dim, m):
    for mapping in ("basic", "positional", "gaussian"):
        module = FourierFeatures(in_dim, mapping, num_features=m, sigma=2.0)
        x = torch.randn(*shape, in_dim)
        out = module(x)
        assert out.shape == (*shape, module.out_dim)


@given(v=st.lists(st.floats(-2, 2), min_size=2, max_size=2), shift=st.integers(-3, 3))
def test_basic_mapping_has_period_one(v, shift):
    # cos and sin of 2 pi v: shifting a coordinate by a whole number changes nothing
    module = FourierFeatures(2, "basic")
    x = torch.tensor([v], dtype=torch.float64)
    torch.testing.assert_close(module(x + shift), module(x), atol=1e-9, rtol=0)


def test_features_have_unit_norm_per_pair():
    out = fourier_features(torch.randn(10, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64))
    torch.testing.assert_close(out[:, :5] ** 2 + out[:, 5:] ** 2, torch.ones(10, 5, dtype=torch.float64))


def test_gaussian_matrix_is_saved_and_reloaded():
    module = FourierFeatures(2, num_features=8, seed=5)
    assert list(module.state_dict()) == ["B"]
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    other = FourierFeatures(2, num_features=8, seed=9)
    assert not torch.equal(other.B, module.B)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(other.B, module.B)
    x = torch.randn(3, 2)
    torch.testing.assert_close(other(x), module(x))
    assert FourierFeatures(2, "positional", num_features=3).state_dict() == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_keeps_float32_matrix(dtype):
    module = FourierFeatures(2, num_features=16, sigma=10.0, seed=0)
    B = module.B.clone()
    module.to(dtype)
    assert module.B.dtype == torch.float32
    torch.testing.assert_close(module.B, B)
    x = torch.tensor([[0.75, -0.5], [3.0, 2.25]], dtype=dtype)
    got = module(x)
    assert got.dtype == dtype
    want = torch.from_numpy(reference(x.double().tolist(), B.double().tolist()))
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.double(), want, atol=eps, rtol=eps)


def test_meta_device():
    module = FourierFeatures(2, "positional", num_features=4, sigma=8.0, device="meta")
    assert module.out_dim == 16
    module.to_empty(device="cpu")
    torch.testing.assert_close(module.B, positional_matrix(2, 4, 8.0))
    gaussian = FourierFeatures(2, num_features=4, seed=2, device="meta")
    assert gaussian.out_dim == 8
    gaussian.to_empty(device="cpu")
    gaussian.reset_parameters()
    torch.testing.assert_close(gaussian.B, FourierFeatures(2, num_features=4, seed=2).B)


def test_registry():
    info = posenc.get("fourier_features")
    assert info.family == "coordinate" and "2006.10739" in info.paper
    assert posenc.create("fourier_features", in_dim=3, num_features=4).out_dim == 8


def test_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        FourierFeatures(2, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        FourierFeatures(2, "positional", sigma=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_matrix(2, 4, -2.0)
    with pytest.raises(ValueError, match="num_features"):
        FourierFeatures(2, num_features=0)
    with pytest.raises(ValueError, match="mapping"):
        FourierFeatures(2, "random")
    with pytest.raises(ValueError, match="in_dim=2"):
        FourierFeatures(2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="`x`"):
        fourier_features(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="`B`"):
        fourier_features(torch.randn(4, 2), torch.randn(2))
    with pytest.raises(ValueError, match="seed"):
        FourierFeatures(2, seed=-1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_features": 10**12}, "num_features"),
        ({"in_dim": 10**12}, "in_dim"),
        ({"mapping": "basic", "in_dim": 10**7}, "in_dim"),
        ({"mapping": "positional", "num_features": 10**10}, "num_features"),
    ],
)
def test_a_matrix_larger_than_memory_is_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`=.* more than the .* of memory"):
        FourierFeatures(**kwargs)
    FourierFeatures(**kwargs, device="meta")  # shapes only: nothing to allocate


def test_matrix_builders_refuse_sizes_larger_than_memory():
    from posenc.coordinate import basic_matrix

    with pytest.raises(ValueError, match="`in_dim`"):
        basic_matrix(10**7)
    with pytest.raises(ValueError, match="`num_scales`"):  # positional_matrix's own argument
        positional_matrix(2, 10**10, 2.0)
    with pytest.raises(ValueError, match="`num_features`"):
        gaussian_matrix(2, 10**12, 2.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_functional_matrix_must_be_finite(bad):
    B = torch.randn(4, 2)
    B[1, 0] = bad  # used to give NaN features silently
    with pytest.raises(ValueError, match="`B` must be finite"):
        fourier_features(torch.rand(3, 2), B)


def test_positional_matrix_names_its_own_argument():
    # refused as `num_features`, FourierFeatures' argument, which positional_matrix does not have
    with pytest.raises(ValueError, match="`num_scales` must be >= 1, got 0"):
        positional_matrix(2, 0, 2.0)
    with pytest.raises(ValueError, match="`num_features` must be >= 1, got 0"):
        FourierFeatures(2, "positional", num_features=0)
