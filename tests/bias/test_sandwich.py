"""Sandwich against a float64 transcription of its bias: the sinusoids' inner product, shifted and compressed per head."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.bias import Sandwich, sandwich_bias
from posenc.core.positions import Positions
from posenc.functional import sinusoidal

#: query and key positions of the float64 and dtype tests: from 0, from 3, and explicit (packed documents)
POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


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


def test_float64_bias_matches_the_formula():
    """A float64 module (or float64 queries) gets the float64 bias, not one rounded to float32."""
    bias = Sandwich(4, width=16).double()(5, 7, offset=2)
    assert bias.dtype == torch.float64
    want = torch.tensor(
        [[[reference(j - (i + 2), h + 1, 4, 16) for j in range(7)] for i in range(5)] for h in range(4)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(bias[0], want, atol=1e-12, rtol=0)
    q = torch.zeros(1, 4, 5, 2, dtype=torch.float64)
    got = Sandwich(4, width=16).score_bias(q, q, q_positions=Positions(5, offset=2), k_positions=Positions(7))
    torch.testing.assert_close(got[0], want, atol=1e-12, rtol=0)
    offsets = torch.arange(-4, 5)
    torch.testing.assert_close(
        sandwich_bias(offsets, 4, width=16, dtype=torch.float64),
        torch.tensor([[reference(int(o), h + 1, 4, 16) for h in range(4)] for o in offsets], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    assert sandwich_bias(offsets, 4, width=16).dtype == torch.float32
    assert sandwich_bias(offsets, 4, width=16, dtype=torch.bfloat16).dtype == torch.float32  # float32 at least
    with pytest.raises(ValueError, match="dtype"):
        sandwich_bias(offsets, 4, width=16, dtype=torch.long)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal):
    """The bias was returned in float32, so a float64 model's blocked and eager paths agreed only to
    about 1e-9; it now follows the float64 queries."""
    assert_float64_attention_is_exact(Sandwich(2, width=8), positions, causal=causal)
    q = torch.zeros(2, 2, 6, 4, dtype=torch.float64)  # float64 queries alone (the module not cast)
    bias = Sandwich(2, width=8).score_bias(q, q, q_positions=positions, k_positions=positions)
    assert bias.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(Sandwich(2, width=8), positions, dtype)
    assert Sandwich(2, width=8).to(dtype)(4).dtype == torch.float32


def test_repr_shows_the_base():
    assert "base=100.0" in repr(Sandwich(2, width=8, base=100.0))


def test_frequencies_check_base_and_size():
    # base=0 gave inf frequencies and base=nan NaN ones without a word; a width past memory reached the allocator
    from posenc.bias import sandwich_frequencies

    for base in (0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="`base` must be"):
            sandwich_frequencies(8, base=base)
    with pytest.raises(TypeError, match="`base` must be a number"):
        sandwich_frequencies(8, base="100")
    with pytest.raises(ValueError, match="`width`=10000000000000 needs"):
        sandwich_frequencies(10**13)
    torch.testing.assert_close(sandwich_frequencies(4, base=100.0), torch.tensor([0.1, 0.01], dtype=torch.float64))
