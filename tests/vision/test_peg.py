"""CPVT's PEG: depthwise convolution over the token grid against a float64 loop; locality; subsets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import peg
from posenc.vision import PEG


def reference_peg(x: torch.Tensor, weight, bias, grid, prefix: int) -> torch.Tensor:
    b, _n, d = x.shape
    h, w = grid
    k = weight.shape[-1]
    out = x.clone()
    for s in range(b):
        for i in range(h):
            for j in range(w):
                for c in range(d):
                    acc = float(bias[c])
                    for u in range(k):
                        for v in range(k):
                            y, z = i + u - k // 2, j + v - k // 2
                            if 0 <= y < h and 0 <= z < w:  # zero padding outside
                                acc += float(weight[c, 0, u, v]) * float(x[s, prefix + y * w + z, c])
                    out[s, prefix + i * w + j, c] += acc
    return out


@pytest.mark.parametrize("grid, prefix, k", [((3, 4), 1, 3), ((2, 2), 0, 3), ((4, 3), 2, 5)])
def test_matches_float64_reference(grid, prefix, k):
    enc = PEG(3, grid, num_prefix_tokens=prefix, kernel_size=k, dtype=torch.float64)
    x = torch.randn(2, prefix + grid[0] * grid[1], 3, dtype=torch.float64)
    with torch.no_grad():
        ref = reference_peg(x, enc.proj.weight, enc.proj.bias, grid, prefix)
        torch.testing.assert_close(enc(x), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(peg(x, enc.proj.weight, enc.proj.bias, grid, num_prefix_tokens=prefix), ref)


@given(st.integers(0, 4), st.integers(0, 4))
def test_a_token_only_sees_its_3x3_neighbourhood(row, col):
    enc = PEG(2, (5, 5))
    x = torch.randn(1, 25, 2)
    y = x.clone()
    y[0, row * 5 + col] += 1.0
    changed = (enc(y) - enc(x)).abs().sum(-1)[0].view(5, 5) > 0
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = True
    assert torch.equal(changed, expected)


def test_prefix_passes_and_explicit_equals_implicit():
    enc = PEG(4, (3, 3), num_prefix_tokens=1)
    x = torch.randn(2, 10, 4)
    out = enc(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(enc(x, positions=torch.arange(10)), out)


def test_subset_of_tokens_sees_zeros_for_the_dropped_ones():
    enc = PEG(4, (3, 3), num_prefix_tokens=1)
    x = torch.randn(1, 10, 4)
    keep = torch.tensor([0, 1, 2, 5, 9])
    dropped = x.clone()
    mask = torch.ones(10, dtype=torch.bool)
    mask[keep] = False
    dropped[:, mask] = 0
    torch.testing.assert_close(enc(x[:, keep], positions=keep), enc(dropped)[:, keep])


def test_any_grid_at_run_time_and_meta_device():
    x = torch.randn(1, 12, 4)
    weight, bias = torch.randn(4, 1, 3, 3), torch.randn(4)
    assert peg(x, weight, bias, (3, 4)).shape == (1, 12, 4)
    assert peg(x, weight, bias, (6, 2)).shape == (1, 12, 4)
    meta = PEG(4, (2, 2), device="meta")
    meta.to_empty(device="cpu")
    assert meta.proj.weight.shape == (4, 1, 3, 3)


def test_state_dict_round_trip():
    a, b = PEG(4, (2, 2)), PEG(4, (2, 2))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 4)
    torch.testing.assert_close(a(x), b(x))


def test_registry_entry():
    info = get("peg")
    assert info.family == "vision" and "2102.10882" in info.paper and info.cls is PEG


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size"):
        PEG(4, (2, 2), kernel_size=2)
    with pytest.raises(ValueError, match="dim"):
        PEG(0, (2, 2))
    with pytest.raises(ValueError, match="x"):
        PEG(4, (2, 2))(torch.randn(1, 5, 4))  # 5 tokens on a 2x2 grid
    with pytest.raises(ValueError, match="x"):
        PEG(4, (2, 2))(torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="x"):
        PEG(4, (2, 2))(torch.randn(4, 4))
    with pytest.raises(ValueError, match="positions"):
        PEG(4, (2, 2))(torch.randn(1, 2, 4), positions=torch.tensor([0, 7]))
