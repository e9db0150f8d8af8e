"""randomized_positions: sorted, distinct, in range, seeded, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc
import posenc.functional as PF
from posenc.core.positions import document_ids_from_cu_seqlens, randomized_positions


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 20), extra=st.integers(0, 40), batch=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_sorted_distinct_in_range(n, extra, batch, seed):
    max_len = max(n + extra, 1)
    p = randomized_positions(n, max_len, batch=batch, generator=torch.Generator().manual_seed(seed))
    assert p.shape == (batch, n) and p.dtype == torch.int64
    if n:
        assert (p[:, 1:] > p[:, :-1]).all()  # strictly increasing: sorted and distinct
        assert p.min() >= 0 and p.max() < max_len


def test_seeded_and_rows_differ():
    a = randomized_positions(8, 100, batch=3, generator=torch.Generator().manual_seed(1))
    b = randomized_positions(8, 100, batch=3, generator=torch.Generator().manual_seed(1))
    c = randomized_positions(8, 100, batch=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_full_range_is_the_plain_positions():
    assert torch.equal(randomized_positions(6, 6, batch=2), torch.arange(6).expand(2, 6))


def test_uniform_over_the_range():
    p = randomized_positions(10, 50, batch=2000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(p.flatten(), minlength=50).float()
    expected = 2000 * 10 / 50
    assert (counts - expected).abs().max() < 0.25 * expected


def test_reexported():
    assert posenc.randomized_positions is randomized_positions and PF.randomized_positions is randomized_positions


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((5, 4), {}, "max_len"),
        ((-1, 4), {}, "`n`"),
        ((2, 0), {}, "max_len"),
        ((2, 4), {"batch": -1}, "batch"),
        ((2.5, 4), {}, "`n`"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        randomized_positions(*args, **kwargs)


def test_bad_generator():
    with pytest.raises(TypeError, match="generator"):
        randomized_positions(2, 4, generator=0)


@pytest.mark.parametrize(("n", "max_len", "batch", "named"), [
    (10**12, 10**13, 1, "n"), (10**12, 2 * 10**12, 1, "n"), (4, 8, 10**13, "batch"),
])
def test_a_draw_no_memory_holds_is_refused_by_name(n, max_len, batch, named):
    """randomized_positions(10**12, 10**13) once failed in the CPU allocator ('can't allocate memory:
    you tried to allocate 16000000000000 bytes'); the size is now checked before anything is drawn."""
    with pytest.raises(ValueError, match=f"`{named}`=.*needs"):
        randomized_positions(n, max_len, batch=batch)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_cu_seqlens_of_a_wrong_dtype_is_refused_saying_integer(dtype):
    # a bool tensor was told it must be "an integer or float tensor", and a float one then refused
    with pytest.raises(ValueError, match="`cu_seqlens` must be a 1-D integer tensor"):
        document_ids_from_cu_seqlens(torch.tensor([0, 1, 2]).to(dtype), 2)


def test_cu_seqlens_of_no_documents_is_an_empty_row():
    # (0,), no documents, was refused as 'must be a 1-D integer tensor', although it is one
    assert document_ids_from_cu_seqlens(torch.tensor([0]), 0).shape == (1, 0)
    with pytest.raises(ValueError, match=r"must rise from 0 to the sequence length 3, got \[0\]"):
        document_ids_from_cu_seqlens(torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="`cu_seqlens` must be a 1-D integer tensor"):
        document_ids_from_cu_seqlens(torch.tensor([], dtype=torch.long), 0)


@pytest.mark.parametrize("position", ["alibi", "shaw", "transformer_xl"])
def test_narrow_integer_positions_are_widened(position):
    # uint8 positions 0..5 gave ALiBi's and Shaw's terms wrapped offsets (3 - 5 = 254 in uint8; outputs
    # off by up to 0.25) and Transformer-XL an error from inside torch ('gather(): Expected dtype int32/int64')
    from posenc.core.positions import Positions
    from posenc.models import Transformer

    assert Positions(3, explicit=torch.arange(3, dtype=torch.uint8)[None]).explicit.dtype == torch.int64
    torch.manual_seed(0)
    model = Transformer(11, 16, 1, 2, position=position, causal=True, attention="eager").double().eval()
    tokens = torch.randint(0, 11, (1, 6), generator=torch.Generator().manual_seed(0))
    want = model(tokens, positions=torch.arange(6))
    for dtype in (torch.uint8, torch.int8, torch.int16):
        torch.testing.assert_close(model(tokens, positions=torch.arange(6, dtype=dtype)), want)


def test_an_empty_batch_draws_no_rows():
    # batch=0 was refused ('`batch` must be >= 1, got 0'), so a Transformer with randomize_positions in
    # training, or apply_rope(randomize_positions=L), failed on an empty batch naming an argument the
    # caller never passed
    from posenc.functional import apply_rope
    from posenc.models import Transformer

    assert randomized_positions(3, 8, batch=0).shape == (0, 3)
    assert randomized_positions(3, 10**9, batch=0).shape == (0, 3)  # the sparse draw
    assert apply_rope(torch.randn(0, 2, 5, 8), None, randomize_positions=16).shape == (0, 2, 5, 8)
    model = Transformer(20, 16, 1, 2, position="rope", causal=True, randomize_positions=16).train()
    assert model(torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5, 20)
