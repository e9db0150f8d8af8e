"""The ``randomize_positions=L`` keyword of the functional helpers that take positions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc
import posenc.functional as PF
from posenc.core.positions import randomized_positions

L = 64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def x(b: int = 2, n: int = 5) -> torch.Tensor:
    return torch.randn(b, 2, n, 8, generator=gen(7))


# (helper called with the keyword, the same helper at explicit positions (b, n))
ROPES = {
    "apply_rope": (lambda **kw: PF.apply_rope(x(), None, **kw), lambda pos: PF.apply_rope(x(), pos)),
    "apply_rope_learned": (
        lambda **kw: PF.apply_rope_learned(x(), None, torch.full((2, 4), 0.3), **kw),
        lambda pos: PF.apply_rope_learned(x(), pos, torch.full((2, 4), 0.3)),
    ),
    "apply_scaled_rope": (
        lambda **kw: PF.apply_scaled_rope(x(), None, scaling="linear", factor=2.0, **kw),
        lambda pos: PF.apply_scaled_rope(x(), pos, scaling="linear", factor=2.0),
    ),
}


@pytest.mark.parametrize("name", ROPES)
def test_rope_helpers_equal_the_drawn_positions_given_explicitly(name):
    keyword, explicit = ROPES[name]
    out = keyword(randomize_positions=L, generator=gen(3))
    drawn = randomized_positions(5, L, batch=2, generator=gen(3))
    torch.testing.assert_close(out, explicit(drawn), rtol=0, atol=0)
    assert not torch.equal(out, explicit(torch.arange(5)))  # not the plain positions
    torch.testing.assert_close(keyword(randomize_positions=L, generator=gen(3)), out, rtol=0, atol=0)
    assert not torch.equal(keyword(randomize_positions=L, generator=gen(4)), out)


def test_sinusoidal_of_a_length_at_drawn_positions():
    out = PF.sinusoidal(6, 8, randomize_positions=L, generator=gen(1))
    drawn = randomized_positions(6, L, generator=gen(1))[0]
    torch.testing.assert_close(out, PF.sinusoidal(drawn, 8), rtol=0, atol=0)
    assert out.shape == (6, 8)
    torch.testing.assert_close(PF.sinusoidal(6, 8, randomize_positions=L, generator=gen(1)), out, rtol=0, atol=0)
    assert PF.sinusoidal(0, 8, randomize_positions=L).shape == (0, 8)
    # L = n leaves no choice: the plain positions
    torch.testing.assert_close(PF.sinusoidal(6, 8, randomize_positions=6), PF.sinusoidal(6, 8), rtol=0, atol=0)


def documents() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [5, 5, 5, 5, 5, 5, 3, 3, 3]])


def test_documents_each_get_their_own_ordered_subset():
    ids = documents()
    out = posenc.positions_from_documents(ids, randomize_positions=L, generator=gen(0))
    g = gen(0)
    want = torch.cat([randomized_positions(k, L, generator=g) for k in (3, 2, 4, 6, 3)], dim=1).reshape(2, 9)
    assert torch.equal(out, want)
    assert torch.equal(posenc.positions_from_documents(ids, randomize_positions=L, generator=gen(0)), out)
    assert not torch.equal(posenc.positions_from_documents(ids, randomize_positions=L, generator=gen(1)), out)
    one = posenc.positions_from_documents(ids[0], randomize_positions=L, generator=gen(0))
    assert one.shape == (9,) and torch.equal(one, out[0])
    assert posenc.positions_from_documents(torch.zeros(2, 0, dtype=torch.long), randomize_positions=L).shape == (2, 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(6, 200), st.integers(0, 2**31))
def test_documents_drawn_positions_are_strictly_increasing_within_range(lengths, max_len, seed):
    ids = torch.cat([torch.full((k,), d) for d, k in enumerate(lengths)])
    out = posenc.positions_from_documents(ids, randomize_positions=max_len, generator=gen(seed))
    plain = posenc.positions_from_documents(ids)
    assert out.dtype == torch.long and out.shape == ids.shape
    assert bool((out >= 0).all()) and bool((out < max_len).all())
    restart = plain == 0
    rising = out[1:] > out[:-1]
    assert bool((rising | restart[1:]).all())  # strictly increasing inside every document


BAD = [
    (lambda **kw: PF.apply_rope(x(), None, **kw), 5),
    (lambda **kw: PF.apply_rope_learned(x(), None, torch.ones(1, 4), **kw), 5),
    (lambda **kw: PF.apply_scaled_rope(x(), None, **kw), 5),
    (lambda **kw: PF.sinusoidal(5, 8, **kw), 5),
    (lambda **kw: posenc.positions_from_documents(torch.tensor([0, 0, 0, 0, 0, 1]), **kw), 5),
]


@pytest.mark.parametrize("call, n", BAD)
def test_bad_randomize_positions_is_refused_by_name(call, n):
    with pytest.raises(ValueError, match=r"`randomize_positions` \(4\).*sequence length \(5\)"):
        call(randomize_positions=n - 1)
    with pytest.raises(ValueError, match="`randomize_positions` must be >= 1"):
        call(randomize_positions=0)
    with pytest.raises(TypeError, match="`randomize_positions` must be an int"):
        call(randomize_positions=8.5)
    with pytest.raises(TypeError, match="`randomize_positions` must be an int"):
        call(randomize_positions=True)
    with pytest.raises(ValueError, match="`generator`"):
        call(generator=gen())
    with pytest.raises(TypeError, match="`generator`"):
        call(randomize_positions=8, generator=3)


def test_positions_and_randomize_positions_together_are_refused():
    with pytest.raises(ValueError, match="`randomize_positions`.*not both"):
        PF.apply_rope(x(), torch.arange(5), randomize_positions=L)
    with pytest.raises(ValueError, match="`randomize_positions`.*int n"):
        PF.sinusoidal(torch.arange(5), 8, randomize_positions=L)


def test_a_max_len_past_int64_is_refused_by_name():
    # randomized_positions(3, 10**30) failed inside torch.randint ('Overflow when unpacking long long')
    with pytest.raises(ValueError, match=r"^`max_len` must be <= 9223372036854775807, got 10{30}$"):
        randomized_positions(3, 10**30, generator=torch.Generator().manual_seed(0))
    drawn = randomized_positions(3, 2**63 - 1, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (1, 3) and bool((drawn[:, 1:] > drawn[:, :-1]).all())


def test_a_randomize_positions_past_int64_is_refused_naming_it():
    # the error named `max_len`, the argument of randomized_positions that the caller never passed
    for call in (
        lambda: PF.apply_rope(torch.zeros(1, 1, 3, 8), None, randomize_positions=10**30),
        lambda: PF.sinusoidal(3, 8, randomize_positions=10**30),
        lambda: posenc.positions_from_documents(torch.tensor([[0, 0, 1]]), randomize_positions=10**30),
    ):
        with pytest.raises(ValueError, match=r"^`randomize_positions` must be <= 9223372036854775807"):
            call()


def test_draws_under_torch_compile_with_symbolic_lengths():
    # torch.rand(..., generator=None) with a symbolic size fails in dynamo's fake-tensor pass ('SymIntArrayRef
    # expected to contain only concrete integers'): a compiled model trained with randomized positions
    # failed at its first call with dynamic=True, and at the first new length otherwise
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: randomized_positions(t.shape[-1], L, batch=t.shape[0]), fullgraph=True, dynamic=True, backend="eager")
    for n in (5, 7):
        torch.manual_seed(n)
        want = randomized_positions(n, L, batch=2)
        torch.manual_seed(n)
        torch.testing.assert_close(compiled(torch.zeros(2, n)), want, atol=0, rtol=0)
