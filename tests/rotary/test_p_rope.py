"""p-RoPE (Barbero et al. 2024, arXiv:2410.06205) against a float64 transcription of its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.functional import apply_scaled_rope
from posenc.rotary import RotaryPositionEncoding, rope_frequencies
from rotary.test_rope import reference


def p_rope_reference(d, base, p):
    """theta_i = base^(-2i/d) for the floor(p * d/2) fastest pairs, 0 (no rotation) for the rest."""
    keep = int(np.floor(p * (d // 2)))
    return np.array([base ** (-2 * i / d) if i < keep else 0.0 for i in range(d // 2)])


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("interleaved", [False, True])
def test_p_rope_matches_reference_and_leaves_slow_pairs_unrotated(p, interleaved):
    d = 16
    rope = RotaryPositionEncoding(d, p=p, interleaved=interleaved)
    x = torch.randn(1, 2, 6, d, dtype=torch.float64)
    got = rope(x, offset=100)
    inv = p_rope_reference(d, 10000.0, p)
    np.testing.assert_allclose(got.numpy(), reference(x.numpy(), range(100, 106), interleaved=interleaved, inv_freq=inv), atol=1e-6)
    keep = int(p * d // 2)
    fixed = [f for i in range(keep, d // 2) for f in ((2 * i, 2 * i + 1) if interleaved else (i, i + d // 2))]
    torch.testing.assert_close(got[..., fixed], x[..., fixed], rtol=0, atol=0)  # exactly unchanged
    torch.testing.assert_close(got, apply_scaled_rope(x, torch.arange(100, 106), p=p, interleaved=interleaved), atol=1e-6, rtol=0)


def test_p_rope_differs_from_partial_rotary():
    # both rotate 4 of 8 pairs; p-RoPE keeps the original fastest frequencies, partial rotary re-spreads
    # the ladder over the first 8 features
    p_rope, _ = rope_frequencies(16, p=0.5)
    partial, _ = rope_frequencies(8)
    assert torch.count_nonzero(p_rope) == 4 and not torch.allclose(p_rope[:4], partial)
    np.testing.assert_allclose(p_rope.numpy(), p_rope_reference(16, 10000.0, 0.5), rtol=1e-15)


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(0, 10_000), i=st.integers(0, 50), j=st.integers(0, 50), p=st.sampled_from([0.25, 0.5, 0.75]))
def test_p_rope_logit_depends_only_on_offset(shift, i, j, p):
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 1, 1, 1, 16, dtype=torch.float64, generator=gen)

    def logit(a, b):
        return (apply_scaled_rope(q, torch.tensor([a]), p=p) * apply_scaled_rope(k, torch.tensor([b]), p=p)).sum().item()

    assert logit(i, j) == pytest.approx(logit(i + shift, j + shift), abs=1e-9)


def test_p_rope_on_the_meta_device_and_state_dict():
    rope = RotaryPositionEncoding(8, p=0.5, device="meta")
    assert rope.cos_cached.device.type == "meta"
    assert RotaryPositionEncoding(8, p=0.5).state_dict() == {}


def test_keep_highest_frequencies_checks_inv_freq():
    # a list failed with AttributeError ('list' object has no attribute 'shape'); integer and (1, f)
    # frequencies, outside the documented float (f,), were taken
    from posenc.rotary import keep_highest_frequencies

    with pytest.raises(TypeError, match="`inv_freq` must be a torch.Tensor, got list"):
        keep_highest_frequencies([1.0, 0.1], 0.5)
    with pytest.raises(ValueError, match="`inv_freq` must be a floating-point tensor, got dtype torch.int64"):
        keep_highest_frequencies(torch.tensor([1, 2]), 0.5)
    with pytest.raises(ValueError, match=r"`inv_freq` must have rank 1, got shape \(1, 4\)"):
        keep_highest_frequencies(torch.ones(1, 4), 0.5)
    assert keep_highest_frequencies(torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64), 0.5).tolist() == [1.0, 0.1, 0.0, 0.0]
