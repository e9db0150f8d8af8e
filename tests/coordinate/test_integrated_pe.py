"""Integrated positional encoding against a Monte-Carlo expectation of NeRF's encoding (mip-NeRF eq. 13-14)."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.coordinate import IntegratedPE
from posenc.functional import integrated_positional_encoding, nerf_encoding


@pytest.mark.parametrize("use_pi", [False, True])
def test_matches_monte_carlo_expectation(use_pi):
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    var = torch.tensor([[0.01, 0.2], [0.003, 0.05]], dtype=torch.float64)
    samples = mean + var.sqrt() * torch.randn(200_000, *mean.shape, generator=gen, dtype=torch.float64)
    expected = nerf_encoding(samples, 4, include_input=False, use_pi=use_pi).mean(0)
    got = integrated_positional_encoding(mean, var, 4, use_pi=use_pi)
    # standard error of a mean of 200k bounded samples is below 1 / sqrt(200k) ~ 0.0022
    torch.testing.assert_close(got, expected, atol=0.01, rtol=0)


def test_closed_form_entry_by_entry():
    mean, var = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[0.04]], dtype=torch.float64)
    got = integrated_positional_encoding(mean, var, 3)[0].tolist()
    want = []
    for l in range(3):
        damp = math.exp(-0.5 * 4**l * 0.04)
        want += [math.sin(2**l * 0.7) * damp, math.cos(2**l * 0.7) * damp]
    assert got == pytest.approx(want, abs=1e-15)


def test_reduces_to_nerf_as_covariance_vanishes():
    mean = torch.randn(6, 3, dtype=torch.float64)
    nerf = nerf_encoding(mean, 5, include_input=False, use_pi=False)
    torch.testing.assert_close(integrated_positional_encoding(mean, torch.zeros_like(mean), 5), nerf, atol=0, rtol=0)
    small = integrated_positional_encoding(mean, torch.full_like(mean, 1e-10), 5)
    torch.testing.assert_close(small, nerf, atol=1e-7, rtol=0)
    # and large variances damp the high bands to zero first
    wide = integrated_positional_encoding(mean, torch.full_like(mean, 4.0), 5)
    assert wide[:, -6:].abs().max() < 1e-20 < wide[:, :6].abs().max()



def test_matches_official_mip_nerf_up_to_channel_order():
    """mip-NeRF's ``integrated_pos_enc`` (min_deg=0, max_deg=L), transcribed: it concatenates all sines
    (``expected_sin`` of ``y``) before all cosines (``expected_sin`` of ``y + pi/2``), level-major."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    var = torch.rand(10, 3, generator=gen, dtype=torch.float64) * 0.05
    levels, c = 6, 3
    scales = torch.tensor([2.0**i for i in range(levels)], dtype=torch.float64)
    y = (mean[..., None, :] * scales[:, None]).reshape(10, -1)
    y_var = (var[..., None, :] * scales[:, None] ** 2).reshape(10, -1)
    official = torch.exp(-0.5 * torch.cat([y_var, y_var], -1)) * torch.sin(torch.cat([y, y + 0.5 * math.pi], -1))
    # ours, per level: sines of the c coordinates then their cosines
    order = [
        k
        for level in range(levels)
        for k in [*range(level * c, level * c + c), *range((levels + level) * c, (levels + level) * c + c)]
    ]
    got = integrated_positional_encoding(mean, var, levels)
    torch.testing.assert_close(got, official[:, order], rtol=0, atol=1e-14)


def test_module_out_dim_and_num_frequencies():
    enc = IntegratedPE(3, 16)
    assert enc.num_frequencies == 16 and enc.out_dim == 96
    assert enc(torch.randn(2, 5, 3), torch.rand(2, 5, 3)).shape == (2, 5, 96)


def test_gradcheck_mean_and_covariance():
    mean = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    var = torch.rand(3, 2, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: integrated_positional_encoding(m, v, 3), (mean, var))


def test_bad_input_is_named():
    enc = IntegratedPE(3, 2)
    with pytest.raises(ValueError, match="`covariance_diagonal` must be >= 0"):
        enc(torch.zeros(2, 3), -torch.ones(2, 3))
    with pytest.raises(ValueError, match="`covariance_diagonal` must have last dimension in_dim=3"):
        enc(torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="`mean` must have last dimension"):
        enc(torch.zeros(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="`covariance_diagonal` must have the shape of `mean`"):
        integrated_positional_encoding(torch.zeros(2, 3), torch.ones(1, 3), 2)
    with pytest.raises(ValueError, match="`covariance_diagonal` must be finite"):
        enc(torch.zeros(2, 3), torch.full((2, 3), math.inf))
    assert enc(torch.empty(0, 3), torch.empty(0, 3)).shape == (0, 12)


def test_constructor_refuses_what_the_forward_would():
    # the functional form takes at most MAX_FREQUENCIES bands; the module says so when built, not when first called
    with pytest.raises(ValueError, match="`num_frequencies` must be <= 64"):
        IntegratedPE(3, 65)
    assert IntegratedPE(3, 64)(torch.zeros(1, 3), torch.zeros(1, 3)).shape == (1, 384)
