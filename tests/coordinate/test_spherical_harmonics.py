"""Spherical harmonics against the closed forms of bands 0-3 (tiny-cuda-nn's signs), a table of
hand-computed values up to band 7, and orthonormality on the sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.coordinate import SphericalHarmonics
from posenc.functional import spherical_harmonics

PI = math.pi


def closed_forms(x, y, z):
    """Bands 0-3 of the real basis with tiny-cuda-nn's sign (-1)^m (m = -l .. l)."""
    return [
        1 / (2 * math.sqrt(PI)),
        -math.sqrt(3 / (4 * PI)) * y,
        math.sqrt(3 / (4 * PI)) * z,
        -math.sqrt(3 / (4 * PI)) * x,
        0.5 * math.sqrt(15 / PI) * x * y,
        -0.5 * math.sqrt(15 / PI) * y * z,
        0.25 * math.sqrt(5 / PI) * (3 * z * z - 1),
        -0.5 * math.sqrt(15 / PI) * x * z,
        0.25 * math.sqrt(15 / PI) * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * PI)) * y * (3 * x * x - y * y),
        0.5 * math.sqrt(105 / PI) * x * y * z,
        -0.25 * math.sqrt(21 / (2 * PI)) * y * (5 * z * z - 1),
        0.25 * math.sqrt(7 / PI) * z * (5 * z * z - 3),
        -0.25 * math.sqrt(21 / (2 * PI)) * x * (5 * z * z - 1),
        0.25 * math.sqrt(105 / PI) * z * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * PI)) * x * (x * x - 3 * y * y),
    ]


def test_matches_closed_forms_of_bands_0_to_3():
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    want = torch.tensor([closed_forms(*p) for p in d.tolist()], dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(d, 4), want, atol=1e-13, rtol=1e-13)
    # tiny-cuda-nn's leading constants and signs (sh_enc: 0.28209479..., -0.48860251... * y)
    assert spherical_harmonics(d, 1)[0, 0].item() == pytest.approx(0.28209479177387814, abs=1e-15)
    torch.testing.assert_close(spherical_harmonics(d, 2)[:, 1], -0.4886025119029199 * d[:, 1])


# (direction, channel, value by hand, the closed form it came from) in tiny-cuda-nn's convention
HAND = [
    ((0.6, 0.0, 0.8), 3, -0.29316150714175193, "-sqrt(3) x / (2 sqrt(pi))"),
    ((0.6, 0.0, 0.8), 6, 0.29016024003231855, "sqrt(5) (3 z^2 - 1) / (4 sqrt(pi))"),
    ((0.6, 0.0, 0.8), 7, -0.524423246684198, "-sqrt(15) x z / (2 sqrt(pi))"),
    ((0.6, 0.0, 0.8), 8, 0.19665871750657424, "sqrt(15) (x^2 - y^2) / (4 sqrt(pi))"),
    ((0.6, 0.0, 0.8), 13, -0.6033004552930948, "sqrt(42) x (1 - 5 z^2) / (8 sqrt(pi))"),
    ((0.0, 1.0, 0.0), 1, -0.4886025119029199, "-sqrt(3) y / (2 sqrt(pi))"),
    ((0.0, 1.0, 0.0), 9, 0.5900435899266435, "sqrt(70) y (y^2 - 3 x^2) / (8 sqrt(pi))"),
    ((0.0, 1.0, 0.0), 25, -0.6563820568401701, "3 sqrt(154) y (10 x^2 y^2 - 5 x^4 - y^4) / (32 sqrt(pi))"),
    ((0.0, 1.0, 0.0), 49, 0.7071627325245963, "3 sqrt(715) y (y^6 - 21 x^2 y^4 + ...) / (64 sqrt(pi))"),
    # at the pole every Y_l^0 is sqrt((2 l + 1) / (4 pi)) and every other order vanishes
    ((0.0, 0.0, 1.0), 12, 0.7463526651802309, "sqrt(7 / (4 pi))"),
    ((0.0, 0.0, 1.0), 42, 1.0171072362820548, "sqrt(13 / (4 pi))"),
    ((0.0, 0.0, 1.0), 56, 1.0925484305920792, "sqrt(15 / (4 pi))"),
]


@pytest.mark.parametrize(("direction", "channel", "value", "form"), HAND, ids=[f"ch{h[1]}" for h in HAND])
def test_hand_computed_values_in_tiny_cuda_nn_convention(direction, channel, value, form):
    out = spherical_harmonics(torch.tensor(direction, dtype=torch.float64), 8)
    assert out[channel].item() == pytest.approx(value, abs=1e-14), form


def test_pole_has_only_the_zonal_harmonics():
    out = spherical_harmonics(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 8)
    zonal = [l * l + l for l in range(8)]
    want = torch.zeros(64, dtype=torch.float64)
    want[zonal] = torch.tensor([math.sqrt((2 * l + 1) / (4 * PI)) for l in range(8)], dtype=torch.float64)
    torch.testing.assert_close(out, want, atol=1e-14, rtol=0)


def test_sign_is_condon_shortley_relative_to_nerfstudio():
    """nerfstudio's channels (bands 0-4, no phase) are ours times (-1)^m: band 1's y, z, x go -, +, -."""
    d = torch.tensor([0.48, 0.6, 0.64], dtype=torch.float64)
    out = spherical_harmonics(d, 5)
    c1 = 0.4886025119029199  # nerfstudio's band-1 constant, positive on y, z and x
    torch.testing.assert_close(out[1:4], torch.tensor([-c1 * 0.6, c1 * 0.64, -c1 * 0.48], dtype=torch.float64))
    # band 4, m = -3: nerfstudio's 1.7701307697799304 y z (3 x^2 - y^2), negated
    x, y, z = d.tolist()
    assert out[17].item() == pytest.approx(-1.7701307697799304 * y * z * (3 * x * x - y * y), abs=1e-14)



def nerfstudio_components(d):
    """nerfstudio's ``components_from_spherical_harmonics`` for bands 0-4 (25 channels), transcribed."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x,
        1.0925484305920792 * x * y, 1.0925484305920792 * y * z, 0.9461746957575601 * zz - 0.31539156525251999,
        1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy),
        0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z, 0.4570457994644658 * y * (5 * zz - 1),
        0.3731763325901154 * z * (5 * zz - 3), 0.4570457994644658 * x * (5 * zz - 1), 1.445305721320277 * z * (xx - yy),
        0.5900435899266435 * x * (xx - 3 * yy),
        2.5033429417967046 * x * y * (xx - yy), 1.7701307697799304 * y * z * (3 * xx - yy),
        0.9461746957575601 * x * y * (7 * zz - 1), 0.6690465435572892 * y * z * (7 * zz - 3),
        0.10578554691520431 * (35 * zz * zz - 30 * zz + 3), 0.6690465435572892 * x * z * (7 * zz - 3),
        0.47308734787878004 * (xx - yy) * (7 * zz - 1), 1.7701307697799304 * x * z * (xx - 3 * yy),
        0.6258357354491761 * (xx * xx - 6 * xx * yy + yy * yy),
    ], dim=-1)


def test_every_nerfstudio_channel_is_ours_times_the_phase():
    """All 25 channels of bands 0-4 at random directions: nerfstudio's value is ours times (-1)^m."""
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    phase = torch.tensor([(-1.0) ** abs(m) for band in range(5) for m in range(-band, band + 1)], dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(d, 5), nerfstudio_components(d) * phase, rtol=0, atol=1e-14)


def _sphere_quadrature(n: int = 24):
    """Gauss-Legendre in z times uniform in phi: exact for polynomials of degree < 2n on the sphere."""
    z, wz = np.polynomial.legendre.leggauss(n)
    phi = np.arange(2 * n) * (2 * PI / (2 * n))
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    s = np.sqrt(1 - zz**2)
    points = np.stack([s * np.cos(pp), s * np.sin(pp), zz], -1).reshape(-1, 3)
    weights = (wz[:, None] * np.full(2 * n, 2 * PI / (2 * n))).reshape(-1)
    return torch.tensor(points), torch.tensor(weights)


def test_orthonormal_up_to_band_7():
    points, weights = _sphere_quadrature()
    y = spherical_harmonics(points, 8)  # 64 functions
    gram = y.T @ (weights[:, None] * y)
    torch.testing.assert_close(gram, torch.eye(64, dtype=torch.float64), atol=1e-12, rtol=0)


@given(st.integers(1, 8))
def test_out_dim_is_degree_squared(degree):
    enc = SphericalHarmonics(degree=degree)
    d = torch.nn.functional.normalize(torch.randn(5, 2, 3), dim=-1)
    assert enc(d).shape == (5, 2, degree**2) == (5, 2, enc.out_dim)


def test_rotation_about_z_keeps_each_band_norm():
    """A rotation mixes orders within a band only: per-band norms are invariant."""
    d = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    a, b = spherical_harmonics(d, 6), spherical_harmonics(d @ rot.T, 6)
    for l in range(6):
        band = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(a[:, band].norm(dim=-1), b[:, band].norm(dim=-1))


def test_gradcheck():
    d = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: spherical_harmonics(d, 5), (d,))


def test_bad_input_is_named():
    enc = SphericalHarmonics(degree=3)
    with pytest.raises(ValueError, match="`directions` must have unit norm"):
        enc(torch.tensor([[1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="`directions` must have last dimension in_dim=3"):
        enc(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="`degree` must be <= 8"):
        SphericalHarmonics(degree=9)
    with pytest.raises(ValueError, match="`in_dim` must be 3"):
        SphericalHarmonics(in_dim=2)
    with pytest.raises(ValueError, match="`directions` must have last dimension 3"):
        spherical_harmonics(torch.rand(3, 4), 2)
    assert enc(torch.empty(0, 3)).shape == (0, 9)
