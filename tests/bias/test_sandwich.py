"""Sandwich against a float64 transcription of its bias: the sinusoids' inner product, shifted and compressed per head."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.bias import Sandwich, sandwich_bias
from posenc.functional import sinusoidal


def reference(offset: int, h: int, heads: int, width: int) -> float:
    inner = sum(math.cos(offset / 10000 ** (2 * k / width)) for k in range(1, width // 2 + 1))
    return (inner - width / 2) / (8 * h / heads)


def test_matches_the_formula():
    module = Sandwich(4, width=16)
    bias = module(5, 7, offset=2)
    for h in range(4):
        for i in range(5):
            for j in range(7):
                assert bias[0, h, i, j].item() == pytest.approx(reference(j - (i + 2), h + 1, 4, 16), abs=2e-6)


def test_it_is_the_inner_product_of_sinusoidal_vectors():
    # p_i . p_j of sinusoids whose frequencies are 10000^(-2k/d') for k = 1 .. d'/2: the paper's derivation
    width, n = 16, 12
    freqs = 10000.0 ** (-2.0 * torch.arange(1, width // 2 + 1, dtype=torch.float64) / width)
    p = torch.cat([torch.sin(torch.arange(n, dtype=torch.float64)[:, None] * freqs), torch.cos(torch.arange(n, dtype=torch.float64)[:, None] * freqs)], -1)
    inner = p @ p.T - width / 2
    bias = sandwich_bias(torch.arange(n)[None, :] - torch.arange(n)[:, None], 1, width=width).squeeze(-1) * 8
    torch.testing.assert_close(bias.double(), inner, atol=2e-5, rtol=0)
    assert sinusoidal(torch.arange(3), 8).shape == (3, 8)  # the same family of vectors posenc exposes


def test_zero_at_offset_zero_and_exact_at_large_offsets():
    module = Sandwich(2, width=32)
    assert module(3).diagonal(dim1=-2, dim2=-1).abs().max() == 0
    far = sandwich_bias(torch.tensor([10**9]), 1, width=32)
    assert far.item() == pytest.approx(reference(10**9, 1, 1, 32), abs=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="width"):
        Sandwich(2, width=7)
    with pytest.raises(ValueError, match="heads"):
        Sandwich(0)
