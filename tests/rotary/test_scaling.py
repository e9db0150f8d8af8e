"""RoPE context-extension scalings against float64 transcriptions of their published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posenc.core.positions import Positions
from posenc.rotary import RopeScaling, RotaryPositionEncoding
from rotary.test_rope import reference


def base_inv_freq(d, base):
    return np.array([base ** (-2 * i / d) for i in range(d // 2)])


def yarn_reference(d, base, factor, original, beta_fast=32.0, beta_slow=1.0):
    """YaRN (Peng et al. 2023, section 3.2 and appendix): blend by a ramp over bands, written per band."""

    def band_for(rotations):
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(band_for(beta_fast)), 0), min(math.ceil(band_for(beta_slow)), d - 1)
    out = []
    for i in range(d // 2):
        theta = base ** (-2 * i / d)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)  # 0 keeps the original frequency
        out.append(theta * (1 - ramp) + (theta / factor) * ramp)
    return np.array(out), 0.1 * math.log(factor) + 1.0


def test_linear_is_position_interpolation():
    got = RopeScaling("linear", 4.0).inverse_frequencies(16, 10000.0)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, 10000.0) / 4.0, rtol=1e-12)


def test_ntk_scales_the_base():
    got = RopeScaling("ntk", 8.0).inverse_frequencies(16, 10000.0)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, 10000.0 * 8.0 ** (16 / 14)), rtol=1e-12)


@pytest.mark.parametrize("seq_len, expect_base", [(100, 10000.0), (512, 10000.0), (1024, 10000.0 * 3.0 ** (16 / 14))])
def test_dynamic_ntk_base_follows_length(seq_len, expect_base):
    scaling = RopeScaling("dynamic_ntk", 2.0, original_max_len=512)
    # factor * L / L0 - (factor - 1) = 2 * 1024 / 512 - 1 = 3
    got = scaling.inverse_frequencies(16, 10000.0, seq_len=seq_len)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, expect_base), rtol=1e-12)
    as_tensor = scaling.inverse_frequencies(16, 10000.0, seq_len=torch.tensor(seq_len))
    np.testing.assert_allclose(as_tensor.numpy(), got.numpy(), rtol=1e-12)


def test_yarn_matches_reference():
    got = RopeScaling("yarn", 4.0, original_max_len=2048).inverse_frequencies(64, 10000.0)
    ref, mscale = yarn_reference(64, 10000.0, 4.0, 2048)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert RopeScaling("yarn", 4.0, original_max_len=2048).attention_factor == pytest.approx(mscale)
    # the fastest band is kept, the slowest fully interpolated
    assert got[0].item() == pytest.approx(1.0) and got[-1].item() == pytest.approx(ref[-1])


def test_module_applies_yarn_attention_factor():
    rope = RotaryPositionEncoding(8, scaling="yarn", factor=4.0, original_max_len=64)
    x = torch.randn(1, 1, 3, 8, dtype=torch.float64)
    ref_freq, mscale = yarn_reference(8, 10000.0, 4.0, 64)
    got = rope(x, offset=10)
    np.testing.assert_allclose(got.numpy(), reference(x.numpy(), range(10, 13), inv_freq=ref_freq, scale=mscale), atol=1e-6)


def test_dynamic_ntk_module_implicit_explicit_agree_and_no_change_within_original_length():
    rope = RotaryPositionEncoding(8, scaling="dynamic_ntk", factor=2.0, original_max_len=16)
    plain = RotaryPositionEncoding(8)
    x = torch.randn(1, 1, 12, 8)
    torch.testing.assert_close(rope(x), plain(x))  # within the trained length nothing changes
    long = torch.randn(1, 1, 40, 8)
    torch.testing.assert_close(rope(long), rope(long, positions=torch.arange(40)))
    assert not torch.allclose(rope(long), plain(long))
    cos, _ = rope.cos_sin(Positions(40))
    assert cos.shape == (1, 40, 4)
