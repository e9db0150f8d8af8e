"""Transformer(randomize_positions=L): random ordered positions in training, plain ones in eval."""

from __future__ import annotations

import pytest
import torch

from posenc.models import Transformer


def model(position: str, L: int | None = 64, **kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(11, 16, 1, 2, position=position, causal=True, randomize_positions=L, **kw)


TOKENS = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("position", ["rope", "alibi", "sinusoidal", "kerple"])
def test_eval_equals_plain_model_training_differs(position):
    plain, randomized = model(position, None).eval(), model(position).eval()
    randomized.load_state_dict(plain.state_dict())
    assert torch.allclose(randomized(TOKENS), plain(TOKENS))
    randomized.train()
    drawn = randomized(TOKENS, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(drawn, plain(TOKENS), atol=1e-4)
    # the same draw as passing those positions explicitly
    from posenc.core.positions import randomized_positions

    explicit = randomized_positions(7, 64, batch=2, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(drawn, plain(TOKENS, positions=explicit), atol=1e-6)
    # explicit positions win over the draw
    assert torch.allclose(randomized(TOKENS, positions=torch.arange(7)), plain(TOKENS), atol=1e-6)


def test_none_is_unaffected():
    plain, randomized = model("none", None), model("none")
    randomized.load_state_dict(plain.state_dict())
    assert torch.allclose(randomized.train()(TOKENS), plain.train()(TOKENS))


def test_length_past_range_raises_in_training_only():
    m = model("rope", 5)
    with pytest.raises(ValueError, match="randomize_positions"):
        m.train()(TOKENS)
    assert m.eval()(TOKENS).shape == (2, 7, 11)


@pytest.mark.parametrize("position", ["conv_context", "fox", "cope"])
def test_encodings_without_positions_are_refused(position):
    with pytest.raises(ValueError, match=f"'{position}' does not"):
        model(position)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_length(bad):
    with pytest.raises((ValueError, TypeError), match="randomize_positions"):
        model("rope", bad)


def test_padded_rows_draw_positions_for_their_real_tokens():
    """With a key_padding_mask, a row's k real tokens get a uniform ordered k-subset of [0, L), as an
    unpadded row of k tokens would: not the first (right padding) or last (left padding) k of n drawn."""
    from collections import Counter
    from itertools import combinations

    m = model("sinusoidal", 8).train()
    seen = []
    encode = m.position.encode_input
    m.position.encode_input = lambda x, positions: seen.append(positions.explicit) or encode(x, positions=positions)
    rows = 1200
    pad = torch.tensor([[True, True, False, False, False, False], [False, False, False, False, True, True]])
    pad = pad.repeat(rows // 2, 1)
    tokens = torch.randint(0, 11, pad.shape, generator=torch.Generator().manual_seed(1))
    m(tokens, key_padding_mask=pad, generator=torch.Generator().manual_seed(2))
    real = seen[0][pad].view(rows, 2)
    assert (real[:, 0] < real[:, 1]).all() and (seen[0][~pad] == 0).all()
    for side in (real[0::2], real[1::2]):  # right-padded rows, left-padded rows
        counts = Counter(map(tuple, side.tolist()))
        assert set(counts) == set(combinations(range(8), 2))  # all 28 pairs, about 21 times each
        assert min(counts.values()) > 5


def test_a_learned_table_shorter_than_the_range_is_refused():
    # with max_len=16 and L=20, a training step failed only when its draw reached 16 (about 9 steps
    # in 10 for 8 tokens) and the others trained: refused when built, and after a resize, every step
    with pytest.raises(ValueError, match=r"`randomize_positions` \(20\) draws positions up to 19, past .*'learned' \(max_len=16"):
        model("learned", 20, max_len=16)
    m = model("learned", 20, max_len=20)
    m.position.resize(16)
    with pytest.raises(ValueError, match=r"max_len=16"):
        m.train()(TOKENS, generator=torch.Generator().manual_seed(0))
    assert m.eval()(TOKENS).shape == (2, 7, 11)
    model("learned", 16, max_len=16).train()(TOKENS)


def test_padded_training_compiles_with_changing_lengths():
    # the padded rows' draw (and randomized_positions under it) passed generator=None to torch.rand,
    # which dynamo refuses with a symbolic size: compile(dynamic=True) failed at the first training call
    torch._dynamo.reset()
    trained = model("rope").train()
    compiled = torch.compile(trained, fullgraph=True, dynamic=True, backend="eager")
    for n in (5, 7):
        tokens = torch.randint(0, 11, (2, n), generator=torch.Generator().manual_seed(n))
        mask = torch.ones(2, n, dtype=torch.bool)
        mask[1, -2:] = False
        torch.manual_seed(n)
        want = trained(tokens, key_padding_mask=mask)
        torch.manual_seed(n)
        torch.testing.assert_close(compiled(tokens, key_padding_mask=mask), want, atol=1e-6, rtol=1e-5)
