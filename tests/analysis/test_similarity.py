"""Similarity structure and score-vs-offset curves, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.analysis import (
    absolute_table,
    offset_profile,
    roformer_decay_bound,
    score_matrix,
    score_vs_offset,
    shift_invariance_error,
    similarity_matrix,
    similarity_structure,
)
from posenc.core.frequencies import inverse_frequencies
from posenc.functional import alibi_slopes, sinusoidal


def test_sinusoidal_similarity_depends_on_offset_only():
    table = sinusoidal(torch.arange(40, dtype=torch.float64), 16)
    sim = similarity_matrix(table)
    # PE(i).PE(j) = sum_k cos((i - j) w_k), written out directly
    w = [10000 ** (-2 * k / 16) for k in range(8)]
    assert sim[3, 11].item() == pytest.approx(sum(math.cos(8 * x) for x in w), abs=1e-9)
    s = similarity_structure(sim)
    assert s.toeplitz_error < 1e-9 and s.symmetry_error < 1e-12
    assert s.monotone_until >= 1


def test_learned_table_is_not_toeplitz():
    table = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert similarity_structure(similarity_matrix(table)).toeplitz_error > 0.3


def test_monotone_and_asymmetric():
    i = torch.arange(10.0)
    decay = -(i[None] - i[:, None]).abs()
    assert similarity_structure(decay).monotone
    one_sided = torch.where(i[None] >= i[:, None], -(i[None] - i[:, None]), torch.zeros(()))
    assert similarity_structure(one_sided).symmetry_error > 0.5


def test_offset_profile_order():
    m = torch.arange(9.0).reshape(3, 3)
    offsets, mean, spread = offset_profile(m)
    assert offsets.tolist() == [-2, -1, 0, 1, 2]
    assert mean.tolist() == [6.0, 5.0, 4.0, 3.0, 2.0]
    assert spread.tolist() == [0.0, 4.0, 8.0, 4.0, 0.0]


def test_absolute_table_of_registered_encoding():
    enc = posenc.create("sinusoidal", dim=8)
    torch.testing.assert_close(absolute_table(enc, 5), sinusoidal(5, 8))
    concat = posenc.create("sinusoidal", dim=8, combine="concat")
    torch.testing.assert_close(absolute_table(concat, 5, dim=12), sinusoidal(5, 8))


def test_alibi_bias_vs_offset_is_linear():
    enc = posenc.create("alibi", heads=4, causal=False)
    offsets, curves = score_vs_offset(enc, 6)
    slopes = alibi_slopes(4)
    for h, curve in enumerate(curves):
        expected = [-slopes[h].item() * abs(o) for o in offsets]
        assert curve == pytest.approx(expected, abs=1e-6)
    # the causal form: slope * (j - i), equal to the above on the keys it attends to (j <= i)
    _, causal = score_vs_offset(posenc.create("alibi", heads=4), 6)
    for h, curve in enumerate(causal):
        assert curve == pytest.approx([slopes[h].item() * o for o in offsets], abs=1e-6)


def test_rope_score_is_sum_of_cosines_and_shift_invariant():
    enc = posenc.create("rope", head_dim=8)
    scores = score_matrix(enc, 5, query="ones")
    w = inverse_frequencies(8).tolist()
    expected = sum(2 * math.cos(3 * x) for x in w)  # offset 3: each pair contributes 2 cos(3 w)
    assert scores[0, 0, 3].item() == pytest.approx(expected, abs=1e-5)
    assert shift_invariance_error(enc, 8, 5) < 1e-5


def test_absolute_bias_is_not_shift_invariant():
    class AbsoluteBias(posenc.PositionEncoding):
        hooks = frozenset({"bias"})
        heads = 1

        def score_bias(self, q, k, *, q_positions, k_positions):
            return (q_positions.tensor().float()[..., :, None] * 0.1).expand(1, 1, q_positions.n, k_positions.n)

    assert shift_invariance_error(AbsoluteBias(), 6, 3) > 0.1


def test_roformer_bound_decays():
    bound = roformer_decay_bound(inverse_frequencies(64), torch.tensor([0, 8, 64, 256]))
    assert bound[0].item() == pytest.approx(16.5)  # all phases 0: mean of 1..32
    assert bound[0] > bound[1] > bound[2] > bound[3]


def test_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        similarity_structure(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="encoding"):
        score_matrix(posenc.create("sinusoidal", dim=8), 4)
    with pytest.raises(ValueError, match="query"):
        score_matrix(posenc.create("rope", head_dim=8), 4, query="zeros")
    with pytest.raises(ValueError, match="shift"):
        shift_invariance_error(posenc.create("rope", head_dim=8), 4, 0)
    with pytest.raises(ValueError, match="table"):
        similarity_matrix(torch.zeros(3, dtype=torch.float32))


def test_nan_and_empty_input_raise():
    # NaN used to give a NaN matrix, or a "symmetric, monotone" verdict from similarity_structure
    nan = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    with pytest.raises(ValueError, match="`table` must be finite"):
        similarity_matrix(nan)
    with pytest.raises(ValueError, match="`matrix` must be finite"):
        similarity_structure(nan)
    with pytest.raises(ValueError, match="`matrix` must be finite"):
        offset_profile(torch.full((3, 3), float("inf")))
    with pytest.raises(ValueError, match="`matrix` must not be empty"):
        similarity_structure(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="`matrix` must not be empty"):
        offset_profile(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="`inv_freq` must hold at least one"):
        roformer_decay_bound(torch.zeros(0), torch.arange(3))
    with pytest.raises(ValueError, match="`inv_freq` must be finite"):
        roformer_decay_bound(torch.tensor([float("nan"), 1.0]), torch.arange(3))
    with pytest.raises(ValueError, match="`offsets` must be finite"):
        roformer_decay_bound(torch.ones(2), torch.tensor([float("nan")]))


def test_lengths_past_memory_are_refused_up_front_naming_n():
    # used to reach the allocator (an (h, n, n) matrix of terabytes) after building the queries and keys
    rope = posenc.create("rope", head_dim=8)
    with pytest.raises(ValueError, match=r"`n`=1000000 needs a \(1, 1000000, 1000000\) torch.float64 tensor"):
        score_matrix(rope, 10**6)
    with pytest.raises(ValueError, match=r"`n`=1000000 needs a \(1, 1000000, 1000000\) torch.float64 tensor"):
        shift_invariance_error(rope, 10**6, 1)
    with pytest.raises(ValueError, match=r"`n`=2000000000 needs a \(2000000000, 8\) torch.float32 tensor"):
        absolute_table(posenc.create("sinusoidal", dim=8), 2 * 10**9)


def test_non_finite_terms_are_refused_not_reported_as_shift_invariant():
    # a T5 bias with NaN weights (a diverged run) measured 0.0, the verdict of a relative encoding
    t5 = posenc.create("t5", heads=2)
    with torch.no_grad():
        t5.bias.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="`encoding` T5RelativeBias gave NaN or inf attention terms"):
        shift_invariance_error(t5, 6, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_absolute_table_of_an_encoding_whose_layers_are_not_float32(dtype):
    # the float32 zero embeddings failed inside the encodings' layers (complex_order: 'expected m1 and m2
    # to have the same dtype, but got: float != double'; conv_context: 'mixed dtype (CPU)')
    for name in ("complex_order", "conv_context"):
        table = absolute_table(posenc.create(name, dim=8, dtype=dtype), 5)
        assert table.shape == (5, 8) and table.dtype == torch.float32
    learned = posenc.create("learned", dim=8, max_len=6, dtype=dtype)
    torch.testing.assert_close(absolute_table(learned, 6), learned.weight.detach().float())


def test_normalize_must_be_a_bool():
    # normalize='no' is truthy: cosines were returned where dot products were asked for
    with pytest.raises(TypeError, match="`normalize` must be True or False, got str 'no'"):
        similarity_matrix(torch.randn(4, 3), normalize="no")


def test_seeds_are_checked_by_name():
    # a str or float seed failed inside torch.Generator.manual_seed ('expected a long, but got str')
    alibi = posenc.create("alibi", heads=2)
    with pytest.raises(TypeError, match="`seed` must be an int, got str 'x'"):
        score_matrix(alibi, 4, seed="x")
    with pytest.raises(TypeError, match="`seed` must be an int, got float 1.5"):
        shift_invariance_error(alibi, 4, 1, seed=1.5)


def test_absolute_table_checks_its_arguments_by_name():
    # offset='1' failed with 'can only concatenate str (not "int") to str', dim=0 was refused as the
    # zero embeddings' `x`, and a module without an input hook failed with AttributeError ('encode_input')
    sinusoid = posenc.create("sinusoidal", dim=8)
    with pytest.raises(TypeError, match="`offset` must be an int, got str '1'"):
        absolute_table(sinusoid, 4, offset="1")
    with pytest.raises(ValueError, match="`offset` must be >= 0, got -1"):
        absolute_table(sinusoid, 4, offset=-1)
    with pytest.raises(ValueError, match="`dim` must be >= 1, got 0"):
        absolute_table(sinusoid, 4, dim=0)
    with pytest.raises(TypeError, match="`dim` must be an int, got str '8'"):
        absolute_table(posenc.create("learned", dim=8), 4, dim="8")
    with pytest.raises(ValueError, match="`encoding` Linear has no 'input' hook"):
        absolute_table(torch.nn.Linear(3, 3), 4, dim=3)
    with pytest.raises(ValueError, match="`encoding` RotaryPositionEncoding has no 'input' hook"):
        absolute_table(posenc.create("rope", head_dim=8), 4, dim=8)
