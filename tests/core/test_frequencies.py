"""Angle precision of posenc.core.frequencies against an arbitrary-precision (mpmath) reference."""

from __future__ import annotations

import mpmath
import pytest
import torch

from posenc.core.frequencies import (
    MAX_POSITION,
    angle_error_bound,
    check_max_position,
    cos_sin,
    inverse_frequencies,
    reduced_angles,
)


def exact_angle_error(computed: float, position: int, i: int, dim: int, base: float) -> float:
    """``|computed - position * base^(-2i/dim)|`` modulo 2π, evaluated with 40 significant digits."""
    with mpmath.workdps(40):
        exact = mpmath.mpf(position) * mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * i) / dim)
        diff = mpmath.mpf(computed) - exact
        diff -= mpmath.nint(diff / (2 * mpmath.pi)) * 2 * mpmath.pi
        return abs(float(diff))


# positions up to the supported maximum and beyond it (where the bound still describes the drift)
POSITIONS = [0, 1, 7, 255, 65_537, 10**6 + 3, 10**7 + 1, 10**8 - 1, 2**31 - 5, MAX_POSITION, 10**10 + 7, 10**12 - 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_reduced_angles_within_the_stated_bound(dtype, base):
    dim = 16
    pos = torch.tensor(POSITIONS)
    theta = reduced_angles(pos, inverse_frequencies(dim, base), dtype=dtype).double()
    for row, p in enumerate(POSITIONS):
        worst = max(exact_angle_error(float(theta[row, i]), p, i, dim, base) for i in range(dim // 2))
        assert worst <= angle_error_bound(p, dtype), (p, worst)


def test_bound_is_tight_enough_to_be_informative():
    # the stated bound is not vacuous: at 10^12 the float32 angle really is off by more than 1e-5 rad,
    # while up to 10^8 it stays within 1.3e-7
    theta = reduced_angles(torch.tensor([10**12 - 1]), inverse_frequencies(16, 10000.0)).double()
    assert max(exact_angle_error(float(theta[0, i]), 10**12 - 1, i, 16, 10000.0) for i in range(8)) > 1e-5
    assert angle_error_bound(10**8) < 1.4e-7
    assert angle_error_bound(MAX_POSITION) < 7e-7


def test_max_position_names_the_limit():
    assert check_max_position("offset", MAX_POSITION) == MAX_POSITION
    with pytest.raises(ValueError, match="offset.*4294967296"):
        check_max_position("offset", MAX_POSITION + 1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_cos_sin_are_the_float32_values_rounded_once(dtype):
    """cos_sin(dtype=bf16) took its sin/cos of bf16 angles: at position 10^6, 0.0073 off the exact
    value where rounding once allows 0.002 (RotaryPositionEncoding.cos_sin and rope_nd_cos_sin with a half
    dtype go through it). Now the float32 values, rounded to the half dtype."""
    from posenc.core.positions import Positions
    from posenc.rotary import RotaryPositionEncoding, rope_nd_cos_sin

    positions = torch.arange(10**6, 10**6 + 64)
    inv_freq = inverse_frequencies(16, 10000.0)
    want = [t.to(dtype) for t in cos_sin(positions, inv_freq, scale=1.25)]
    got = cos_sin(positions, inv_freq, scale=1.25, dtype=dtype)
    assert all(g.dtype == dtype and torch.equal(g, w) for g, w in zip(got, want))
    rope = RotaryPositionEncoding(16)
    assert torch.equal(rope.cos_sin(Positions(64, 10**6), dtype=dtype)[0][0], cos_sin(positions, inv_freq)[0].to(dtype))
    nd = rope_nd_cos_sin(positions[:, None], axes_dim=(16,), dtype=dtype)
    assert torch.equal(nd[1], cos_sin(positions, inv_freq)[1].to(dtype))
