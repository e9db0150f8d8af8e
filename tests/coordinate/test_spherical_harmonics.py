"""Spherical harmonics against the closed forms of bands 0-3 and orthonormality on the sphere."""

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
    """Bands 0-3 of the real basis without the Condon-Shortley phase (m = -l .. l)."""
    return [
        1 / (2 * math.sqrt(PI)),
        math.sqrt(3 / (4 * PI)) * y,
        math.sqrt(3 / (4 * PI)) * z,
        math.sqrt(3 / (4 * PI)) * x,
        0.5 * math.sqrt(15 / PI) * x * y,
        0.5 * math.sqrt(15 / PI) * y * z,
        0.25 * math.sqrt(5 / PI) * (3 * z * z - 1),
        0.5 * math.sqrt(15 / PI) * x * z,
        0.25 * math.sqrt(15 / PI) * (x * x - y * y),
        0.25 * math.sqrt(35 / (2 * PI)) * y * (3 * x * x - y * y),
        0.5 * math.sqrt(105 / PI) * x * y * z,
        0.25 * math.sqrt(21 / (2 * PI)) * y * (5 * z * z - 1),
        0.25 * math.sqrt(7 / PI) * z * (5 * z * z - 3),
        0.25 * math.sqrt(21 / (2 * PI)) * x * (5 * z * z - 1),
        0.25 * math.sqrt(105 / PI) * z * (x * x - y * y),
        0.25 * math.sqrt(35 / (2 * PI)) * x * (x * x - 3 * y * y),
    ]


def test_matches_closed_forms_of_bands_0_to_3():
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    want = torch.tensor([closed_forms(*p) for p in d.tolist()], dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(d, 4), want, atol=1e-13, rtol=1e-13)
    # nerfstudio's published leading constants
    assert spherical_harmonics(d, 1)[0, 0].item() == pytest.approx(0.28209479177387814, abs=1e-15)
    torch.testing.assert_close(spherical_harmonics(d, 2)[:, 1], 0.4886025119029199 * d[:, 1])


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
