"""Transformer-XL's relative shift against per-pair indexing."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.functional import rel_shift


def naive_shift(x: torch.Tensor) -> torch.Tensor:
    """out[i, j] = the entry of row i whose column holds distance i + (m - n) - j; NaN elsewhere."""
    *_, n, m = x.shape
    out = torch.full_like(x, float("nan"))
    for i in range(n):
        for j in range(m):
            distance = i + (m - n) - j
            if distance >= 0:
                out[..., i, j] = x[..., i, m - 1 - distance]  # column c holds distance m - 1 - c
    return out


@given(n=st.integers(1, 7), extra=st.integers(0, 6), lead=st.integers(1, 3))
def test_equals_per_pair_indexing(n, extra, lead):
    m = n + extra
    x = torch.randn(lead, 2, n, m, dtype=torch.float64)
    got, want = rel_shift(x), naive_shift(x)
    visible = ~want.isnan()
    assert got.shape == x.shape
    assert torch.equal(got[visible], want[visible])
    assert torch.isfinite(got).all()


def test_square_lower_triangle_is_toeplitz():
    # with distances as values, the shifted matrix holds i - j on and below the diagonal
    n = 6
    x = torch.arange(n - 1, -1, -1, dtype=torch.float32).expand(n, n)
    got = rel_shift(x)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    assert torch.equal(got[j <= i], (i - j).float()[j <= i])


def test_bad_input():
    with pytest.raises(ValueError, match="x"):
        rel_shift(torch.randn(4, 3))  # m < n
    with pytest.raises(ValueError, match="x"):
        rel_shift(torch.randn(5))
    with pytest.raises(ValueError, match="x"):
        rel_shift(torch.randn(2, 3, dtype=torch.complex64))
