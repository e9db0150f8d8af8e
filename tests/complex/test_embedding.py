"""Complex word-order embeddings: the formula, the multiplicative shift property, gradients."""

import cmath

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.complex import ComplexOrderEmbedding
from posenc.functional import complex_order


def test_formula_against_float64_loop():
    r, w, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    pos = torch.tensor([[0, 5, 11]])
    got = complex_order(r, w, t, pos)
    assert got.dtype == torch.complex64 and got.shape == (2, 3, 4)
    for b in range(2):
        for n in range(3):
            for j in range(4):
                want = float(r[b, n, j]) * cmath.exp(1j * (float(w[b, n, j]) * int(pos[0, n]) + float(t[b, n, j])))
                assert abs(complex(got[b, n, j]) - want) < 1e-5


@pytest.mark.parametrize("frequency", ["word", "shared"])
@pytest.mark.parametrize("phase", ["word", "shared"])
@given(p=st.integers(0, 200), k=st.integers(0, 200))
def test_shift_multiplies_by_a_factor_of_k_only(frequency, phase, p, k):
    torch.manual_seed(0)
    emb = ComplexOrderEmbedding(7, 5, frequency=frequency, phase=phase)
    tokens = torch.arange(7).unsqueeze(0)
    with torch.no_grad():
        f = {q: emb(tokens, positions=torch.full((7,), q)) for q in {0, p, k, p + k}}
    # f(p + k) f(0) = f(p) f(k): the ratio f(p + k) / f(p) = f(k) / f(0) does not depend on p
    torch.testing.assert_close(f[p + k] * f[0], f[p] * f[k], atol=1e-5, rtol=1e-5)
    # ... and it is exp(i omega k), from the frequencies alone
    omega = emb.frequency.detach().double().expand(7, 5)
    factor = torch.exp(1j * omega * k).to(torch.complex64)
    torch.testing.assert_close(f[p + k], f[p] * factor, atol=1e-5, rtol=1e-5)


def test_shared_tables_have_one_value_per_dimension():
    emb = ComplexOrderEmbedding(7, 5, frequency="shared", phase="word")
    assert emb.frequency.shape == (5,) and emb.phase.shape == (7, 5) and emb.amplitude.shape == (7, 5)


def test_gradients_reach_amplitude_frequency_phase():
    emb = ComplexOrderEmbedding(6, 4)
    z = emb(torch.randint(0, 6, (2, 5)))
    (z.real.square().sum() + z.imag.sum()).backward()
    for name in ("amplitude", "frequency", "phase"):
        grad = getattr(emb, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_explicit_positions_equal_implicit():
    emb = ComplexOrderEmbedding(6, 4)
    tokens = torch.randint(0, 6, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(emb(tokens, offset=3), emb(tokens, positions=torch.arange(3, 8)))
        torch.testing.assert_close(emb(tokens, offset=3), emb(tokens, positions=torch.arange(3, 8).expand(2, 5)))


def test_meta_device_and_state_dict():
    emb = ComplexOrderEmbedding(6, 4, phase="shared", device="meta")
    assert emb.amplitude.is_meta
    emb = emb.to_empty(device="cpu")
    emb.reset_parameters()
    other = ComplexOrderEmbedding(6, 4, phase="shared")
    other.load_state_dict(emb.state_dict())
    tokens = torch.randint(0, 6, (1, 3))
    torch.testing.assert_close(other(tokens), emb(tokens))
    assert other(tokens).shape == (1, 3, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="frequency"):
        ComplexOrderEmbedding(6, 4, frequency="position")
    with pytest.raises(ValueError, match="phase"):
        ComplexOrderEmbedding(6, 4, phase="none")
    with pytest.raises(ValueError, match="dim"):
        ComplexOrderEmbedding(6, 0)
    emb = ComplexOrderEmbedding(6, 4)
    with pytest.raises(ValueError, match="tokens"):
        emb(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="positions"):
        emb(torch.zeros(1, 3, dtype=torch.long), positions=torch.arange(4))
    z = torch.randn(1, 2, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match="amplitude"):
        complex_order(z, torch.randn(3), torch.randn(3), torch.arange(2).unsqueeze(0))


def test_sizes_past_memory_raise_naming_the_argument():
    # the tables used to reach the allocator (a 4 TB request) instead of raising
    with pytest.raises(ValueError, match="vocab_size.*more than"):
        ComplexOrderEmbedding(10**6, 10**6)


def test_randomize_positions_draws_ordered_positions_from_the_range():
    """``randomize_positions=L`` equals passing :func:`randomized_positions` drawn from the same seed."""
    from posenc.functional import randomized_positions

    gen = torch.Generator().manual_seed(0)
    r, w, t = torch.rand(3, 5, 4, generator=gen), torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    got = complex_order(r, w, t, randomize_positions=40, generator=torch.Generator().manual_seed(7))
    drawn = randomized_positions(5, 40, batch=3, generator=torch.Generator().manual_seed(7))
    assert (drawn.diff(dim=-1) > 0).all() and drawn.max() < 40 and not torch.equal(drawn[0], torch.arange(5))
    torch.testing.assert_close(got, complex_order(r, w, t, drawn))
    with pytest.raises(ValueError, match="randomize_positions"):
        complex_order(r, w, t, torch.arange(5).unsqueeze(0), randomize_positions=40)
    with pytest.raises(ValueError, match="at least the sequence length"):
        complex_order(r, w, t, randomize_positions=4)
    with pytest.raises(ValueError, match="`positions` is required"):
        complex_order(r, w, t)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (torch.tensor([[0, -1]]), r"ids in \[0, 10\) \(vocab_size\), got values in \[-1, 0\]"),  # wrapped silently
        (torch.tensor([[0, 10]]), r"ids in \[0, 10\)"),  # was an IndexError
        (torch.ones(1, 2, dtype=torch.bool), "int64 or int32, got torch.bool"),  # indexed as a mask
        (torch.ones(1, 2, dtype=torch.uint8), "int64 or int32, got torch.uint8"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused_by_name(tokens, message):
    with pytest.raises(ValueError, match=f"`tokens` must be .*{message}"):
        ComplexOrderEmbedding(10, 4)(tokens)
    assert ComplexOrderEmbedding(10, 4)(torch.tensor([[0, 9]], dtype=torch.int32)).shape == (1, 2, 4)
