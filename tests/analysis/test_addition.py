"""The addition-theorem fit: sinusoids give an orthogonal block rotation, a learned table nothing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.analysis import fit_linear_map, fit_shift_map, fit_shift_map_at, shift_map_residuals
from posenc.functional import sinusoidal

SPREAD = torch.arange(160, dtype=torch.float64) * 389  # positions over a wide range


def _rotation_reference(d: int, k: int, base: float = 10000.0) -> torch.Tensor:
    """The expected M_k for the interleaved layout, written from the angle-addition theorem."""
    m = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        w = base ** (-2 * i / d)
        c, s = math.cos(k * w), math.sin(k * w)
        # (sin(a + b), cos(a + b)) = (sin a cos b + cos a sin b, cos a cos b - sin a sin b)
        m[2 * i, 2 * i], m[2 * i, 2 * i + 1] = c, s
        m[2 * i + 1, 2 * i], m[2 * i + 1, 2 * i + 1] = -s, c
    return m


@given(k=st.integers(1, 40), interleaved=st.booleans())
def test_sinusoidal_map_is_orthogonal_block_rotation(k, interleaved):
    fit = fit_shift_map_at(lambda p: sinusoidal(p, 32, interleaved=interleaved), SPREAD, k)
    assert fit.residual < 1e-5
    assert fit.is_orthogonal and fit.is_block_rotation and fit.well_posed
    assert fit.layout == ("interleaved" if interleaved else "halves")


def test_sinusoidal_map_equals_the_theorem():
    fit = fit_shift_map_at(lambda p: sinusoidal(p, 16), SPREAD, 3)
    torch.testing.assert_close(fit.matrix, _rotation_reference(16, 3), atol=1e-8, rtol=0)


def test_random_learned_table_has_large_residual():
    table = torch.randn(128, 32, generator=torch.Generator().manual_seed(0)) * 0.02
    fit = fit_shift_map(table, 1)
    assert fit.residual > 0.5
    assert not fit.is_orthogonal and not fit.is_block_rotation


def test_contiguous_sinusoid_table_is_ill_posed_but_fits():
    # over 0..n-1 the slowest sinusoids barely move: the fit is exact but M is not identifiable
    fit = fit_shift_map(sinusoidal(torch.arange(128, dtype=torch.float64), 32), 1)
    assert fit.residual < 1e-8
    assert not fit.well_posed


def test_residual_curve():
    fits = shift_map_residuals(torch.randn(100, 8), range(1, 4))
    assert [f.shift for f in fits] == [1, 2, 3] and all(f.residual > 0.3 for f in fits)


def test_odd_width_has_no_layout():
    fit = fit_linear_map(torch.randn(20, 3), torch.randn(20, 3))
    assert fit.layout is None and not fit.is_block_rotation and math.isnan(fit.block_error)


def test_bad_input():
    with pytest.raises(ValueError, match="table"):
        fit_shift_map(torch.randn(10, 16), 1)
    with pytest.raises(ValueError, match="shift"):
        fit_shift_map(torch.randn(40, 4), 0)
    with pytest.raises(ValueError, match="table"):
        fit_shift_map(torch.randn(40), 1)
    with pytest.raises(ValueError, match="target"):
        fit_linear_map(torch.randn(20, 3), torch.randn(20, 4))
    with pytest.raises(ValueError, match="positions"):
        fit_shift_map_at(lambda p: p, torch.zeros(3, 3), 1)


def test_nan_input_raises_naming_the_argument():
    # used to fail inside torch.linalg.lstsq with an internal assert
    nan = torch.full((12, 4), float("nan"))
    with pytest.raises(ValueError, match="`table` must be finite"):
        fit_shift_map(nan, 1)
    with pytest.raises(ValueError, match="`source` must be finite"):
        fit_linear_map(nan, torch.randn(12, 4))
    with pytest.raises(ValueError, match="`positions` must be finite"):
        fit_shift_map_at(lambda p: sinusoidal(p, 8), torch.tensor([1.0, float("nan")] * 10), shift=1)
    with pytest.raises(ValueError, match="`encode` returned NaN"):
        fit_shift_map_at(lambda p: torch.full((p.shape[0], 8), float("nan")), torch.arange(20.0), shift=1)


def test_fit_at_positions_names_its_own_arguments():
    # too few positions, or an encode returning a list or a (1, N, d) batch, were refused as fit_linear_map's
    # `source` ("`source` needs more rows than columns ...", "`source` must be a torch.Tensor, got list")
    with pytest.raises(ValueError, match="`positions` needs more entries than the encodings' width d = 8 .* got 5"):
        fit_shift_map_at(lambda p: sinusoidal(p, 8), torch.arange(5) * 100.0, 1)
    with pytest.raises(TypeError, match="`encode` must return a torch.Tensor, got list"):
        fit_shift_map_at(lambda p: sinusoidal(p, 8).tolist(), SPREAD, 1)
    with pytest.raises(ValueError, match=r"`encode` must return one \(N, d\) tensor per call"):
        fit_shift_map_at(lambda p: sinusoidal(p, 8)[None], SPREAD, 1)
