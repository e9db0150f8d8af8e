"""Sinusoidal encoding against a float64 transcription of Vaswani et al. (2017), section 3.5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.core.positions import Positions
from posenc.functional import sinusoidal
from posenc.input import SinusoidalPositionEncoding


def reference(positions, dim, base=10000.0, interleaved=True):
    """PE(p, 2i) = sin(p / base^(2i/d)), PE(p, 2i+1) = cos(p / base^(2i/d)), element by element."""
    out = np.zeros((len(positions), dim))
    for row, p in enumerate(positions):
        for i in range(dim // 2):
            angle = p / base ** (2 * i / dim)
            if interleaved:
                out[row, 2 * i], out[row, 2 * i + 1] = math.sin(angle), math.cos(angle)
            else:
                out[row, i], out[row, dim // 2 + i] = math.sin(angle), math.cos(angle)
    return out


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_matches_float64_reference(interleaved, base):
    positions = [0, 1, 2, 7, 100, 1234]
    got = sinusoidal(torch.tensor(positions, dtype=torch.float64), 16, base=base, interleaved=interleaved)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference(positions, 16, base, interleaved), atol=1e-12)
    got32 = sinusoidal(torch.tensor(positions), 16, base=base, interleaved=interleaved)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), reference(positions, 16, base, interleaved), atol=1e-6)


def test_fractional_positions_and_any_shape():
    pos = torch.tensor([[0.5, 2.25], [3.75, 10.125]], dtype=torch.float64)
    got = sinusoidal(pos, 8)
    assert got.shape == (2, 2, 8)
    np.testing.assert_allclose(got.reshape(4, 8).numpy(), reference(pos.flatten().tolist(), 8), atol=1e-12)


def test_int_length_means_arange():
    torch.testing.assert_close(sinusoidal(5, 8), sinusoidal(torch.arange(5), 8))


def rotation_for_offset(k, dim, base=10000.0):
    """The block-diagonal rotation M_k with PE(p + k) = M_k PE(p) for the interleaved layout."""
    m = np.zeros((dim, dim))
    for i in range(dim // 2):
        w = 1.0 / base ** (2 * i / dim)
        c, s = math.cos(k * w), math.sin(k * w)
        # (sin(a + b), cos(a + b)) = [[cos b, sin b], [-sin b, cos b]] (sin a, cos a)
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, s], [-s, c]]
    return m


@given(k=st.integers(-50, 50), start=st.integers(0, 1000))
def test_shift_is_the_same_linear_map_for_every_position(k, start):
    positions = torch.arange(start, start + 20, dtype=torch.float64)
    pe = sinusoidal(positions, 12).numpy()
    shifted = sinusoidal(positions + k, 12).numpy()
    m = rotation_for_offset(k, 12)
    np.testing.assert_allclose(pe @ m.T, shifted, atol=1e-9)


def test_module_cache_explicit_equals_implicit_and_offset():
    enc = SinusoidalPositionEncoding(16, cache_len=4)
    x = torch.randn(2, 10, 16)
    implicit = enc(x, offset=3)
    explicit = enc(x, positions=torch.arange(3, 13))
    torch.testing.assert_close(implicit, explicit)
    torch.testing.assert_close(implicit - x, sinusoidal(torch.arange(3, 13), 16).expand(2, -1, -1))
    assert enc.table.shape[0] >= 13  # grew on demand
    batch_pos = torch.stack([torch.arange(10), torch.arange(5, 15)])
    torch.testing.assert_close(enc(x, positions=batch_pos)[1] - x[1], sinusoidal(torch.arange(5, 15), 16))


def test_concat_layout():
    enc = SinusoidalPositionEncoding(8, combine="concat", interleaved=False)
    x = torch.randn(1, 5, 4)
    out = enc(x)
    assert out.shape == (1, 5, 12) and enc.concat_dim == 8
    torch.testing.assert_close(out[..., :4], x)
    torch.testing.assert_close(out[0, :, 4:], sinusoidal(5, 8, interleaved=False))


def test_cache_is_not_saved_and_stays_float32_under_bf16():
    enc = SinusoidalPositionEncoding(32)
    assert "table" not in enc.state_dict()
    enc = enc.to(torch.bfloat16)
    assert enc.table.dtype == torch.float32


def test_bf16_model_at_large_positions_matches_float64():
    enc = SinusoidalPositionEncoding(64).to(torch.bfloat16)
    x = torch.zeros(1, 8, 64, dtype=torch.bfloat16)
    positions = torch.tensor([0, 255, 256, 257, 4097, 65537, 99998, 100000])
    out = enc(x, positions=positions)
    assert out.dtype == torch.bfloat16
    ref = torch.from_numpy(reference(positions.tolist(), 64))
    # bf16 output tolerance: the float64 value rounded to bf16 differs from the exact one by <= 2^-9 relative
    torch.testing.assert_close(out[0].double(), ref, atol=4e-3, rtol=1.6e-2)
    # an implementation holding positions or angles in bf16 would fail here: neighbours collapse
    assert not torch.equal(out[0, 2], out[0, 3])


def test_meta_device_then_materialise():
    enc = SinusoidalPositionEncoding(16, device="meta")
    assert enc.table.is_meta
    enc = enc.to_empty(device="cpu")
    torch.testing.assert_close(enc.table[:10], sinusoidal(10, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dim": 7}, "dim"), ({"dim": 0}, "dim"), ({"dim": 8, "base": -1.0}, "base"), ({"dim": 8, "combine": "mul"}, "combine")],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SinusoidalPositionEncoding(**kwargs)


def test_bad_function_arguments():
    with pytest.raises(ValueError, match="dim"):
        sinusoidal(torch.arange(4), 5)
    with pytest.raises(ValueError, match="positions"):
        sinusoidal(torch.arange(4).to(torch.bfloat16), 8)
    with pytest.raises(ValueError, match="positions"):
        sinusoidal(-3, 8)
    with pytest.raises(TypeError, match="positions"):
        sinusoidal([1, 2], 8)
    enc = SinusoidalPositionEncoding(8)
    with pytest.raises(ValueError, match="last dimension 8"):
        enc(torch.randn(1, 4, 6))
    with pytest.raises(ValueError, match="rank 3"):
        enc(torch.randn(4, 8))
    with pytest.raises(ValueError, match="positions"):
        enc(torch.randn(1, 4, 8), positions=torch.arange(5))


def test_hook_accepts_positions_objects():
    enc = SinusoidalPositionEncoding(8)
    x = torch.zeros(1, 3, 8)
    torch.testing.assert_close(enc.encode_input(x, positions=Positions(3, 2)), sinusoidal(torch.arange(2, 5), 8)[None])


def test_far_offset_uses_a_window_not_a_table_from_zero():
    enc = SinusoidalPositionEncoding(64, cache_len=16)
    x = torch.zeros(1, 5, 64)
    got = enc(x, offset=10**7)
    assert enc.table.shape[0] <= 16
    np.testing.assert_allclose(got[0].numpy(), reference(range(10**7, 10**7 + 5), 64), atol=2e-6)
    torch.testing.assert_close(got, enc(x, positions=torch.arange(10**7, 10**7 + 5)))
    for p in [3, 20, 19, 21, 500]:  # decoding forwards and backwards moves the window
        torch.testing.assert_close(enc(x[:, :1], offset=p)[0], sinusoidal(torch.tensor([p]), 64))
        assert enc.table.shape[0] == 16


def test_positions_past_the_supported_maximum_raise():
    enc = SinusoidalPositionEncoding(8)
    with pytest.raises(ValueError, match="offset.*largest supported position 4294967296"):
        enc(torch.zeros(1, 5, 8), offset=2**40)


def test_a_table_past_memory_names_the_argument_that_makes_it_large():
    with pytest.raises(ValueError, match="`positions`=1000000000000 needs"):
        sinusoidal(10**12, 8)
    # a width past memory used to be reported as `positions`=4
    with pytest.raises(ValueError, match="`dim`=1099511627776 needs"):
        sinusoidal(4, 2**40)


@pytest.mark.parametrize("positions", [None, torch.arange(3, 8), torch.arange(3, 8).float()])
def test_float64_model_gets_a_float64_encoding(positions):
    # the float32 cached table (and float32 inline path) left a float64 model 1e-7 from the formula
    module = SinusoidalPositionEncoding(8, combine="concat").double()
    got = module(torch.zeros(1, 5, 0, dtype=torch.float64), positions=positions)
    rows = list(range(5)) if positions is None else positions.tolist()
    assert got.dtype == torch.float64
    torch.testing.assert_close(got[0], torch.from_numpy(reference(rows, 8)), atol=1e-13, rtol=0)


def test_a_generator_beside_explicit_positions_is_refused_naming_generator():
    # the error named `randomize_positions`, an argument the caller never passed
    with pytest.raises(ValueError, match=r"^`generator` draws randomized positions.*got a Tensor"):
        sinusoidal(torch.arange(5), 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^`randomize_positions` draws the positions of a length"):
        sinusoidal(torch.arange(5), 8, randomize_positions=8, generator=torch.Generator().manual_seed(0))


def test_fairseq_and_tensor2tensor_values_are_timestep_embedding():
    # documented: they share interleaved=False's layout, not its frequencies (exponent i / (d/2 - 1))
    from posenc.functional import timestep_embedding

    d, half = 10, 5
    p = torch.arange(0, 300, 7, dtype=torch.float64)
    step = math.log(10000.0) / (half - 1)  # fairseq's SinusoidalPositionalEmbedding, t2t's get_timing_signal_1d
    theta = p[:, None] * torch.exp(-step * torch.arange(half, dtype=torch.float64))[None]
    want = torch.cat([theta.sin(), theta.cos()], dim=-1)
    torch.testing.assert_close(timestep_embedding(p, d, max_period=10000.0), want, rtol=0, atol=1e-12)
    assert not torch.allclose(sinusoidal(p, d, interleaved=False).double(), want, atol=1e-3)


def test_repr_shows_the_scale():
    assert "scale=2.0" in repr(SinusoidalPositionEncoding(8, scale=2.0))
