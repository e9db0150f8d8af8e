"""ALiBi slopes and biases against a float64 transcription of Press et al. (2021), section 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.bias import ALiBi
from posenc.core.positions import Positions
from posenc.functional import alibi_bias, alibi_slopes


def reference_slopes(n):
    """The paper's rule: geometric from 2^(-8/n) for powers of two; otherwise the closest smaller power
    of two, then every other slope of twice that power."""

    def power_of_two(k):
        return [2.0 ** (-8.0 * (i + 1) / k) for i in range(k)]

    if math.log2(n).is_integer():
        return power_of_two(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_two(closest) + reference_slopes(2 * closest)[0::2][: n - closest]


def test_published_slopes_for_eight_heads():
    np.testing.assert_allclose(alibi_slopes(8).numpy(), [1 / 2**i for i in range(1, 9)], rtol=1e-7)


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 7, 12, 16, 20, 24, 33])
def test_slopes_match_reference_for_any_head_count(heads):
    got = alibi_slopes(heads, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, reference_slopes(heads), rtol=1e-12)
    assert len(set(got.tolist())) == heads  # all distinct


def test_causal_and_symmetric_bias_values():
    slopes = alibi_slopes(4, dtype=torch.float64)
    alibi = ALiBi(4, causal=True)
    bias = alibi(5)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                assert bias[0, h, i, j].item() == pytest.approx(-slopes[h].item() * (i - j), abs=1e-6)
    sym = ALiBi(4, causal=False)(5)
    torch.testing.assert_close(sym[0, :, 4, 0], sym[0, :, 0, 4])
    assert (sym <= 0).all()


@given(shift=st.integers(0, 100000), n=st.integers(1, 6))
def test_bias_depends_only_on_offset(shift, n):
    alibi = ALiBi(3)
    base = alibi(n)
    moved = alibi(n, q_positions=torch.arange(n) + shift, k_positions=torch.arange(n) + shift)
    torch.testing.assert_close(base, moved)


def test_packed_positions_and_offset():
    alibi = ALiBi(2)
    # two packed sequences of length 3: positions restart at 0 for the second
    pos = torch.tensor([[0, 1, 2, 0, 1, 2]])
    bias = alibi.score_bias(None, None, q_positions=Positions(6, explicit=pos), k_positions=Positions(6, explicit=pos))
    assert bias[0, 0, 3, 2].item() == pytest.approx(alibi.slopes[0].item() * 2)  # j - i = 2 - 0
    # a cached step: 1 query at position 4 over 5 keys
    torch.testing.assert_close(alibi(1, 5, offset=4), alibi(5)[:, :, 4:])
    torch.testing.assert_close(alibi_bias(torch.tensor([[[0, -3]]]), alibi.slopes)[0, 1, 0, 1], -3 * alibi.slopes[1])


def test_meta_device_and_bf16():
    alibi = ALiBi(5, device="meta")
    alibi = alibi.to_empty(device="cpu")
    np.testing.assert_allclose(alibi.slopes.numpy(), reference_slopes(5), rtol=1e-6)
    assert alibi.to(torch.bfloat16).slopes.dtype == torch.float32
    assert alibi.state_dict() == {}


def test_bad_input():
    with pytest.raises(ValueError, match="num_heads"):
        alibi_slopes(0)
    with pytest.raises(TypeError, match="num_heads"):
        alibi_slopes(2.5)
    with pytest.raises(ValueError, match="heads"):
        ALiBi(0)
    with pytest.raises(ValueError, match="relative"):
        alibi_bias(torch.zeros(3, 3), alibi_slopes(2))
    with pytest.raises(ValueError, match="slopes"):
        alibi_bias(torch.zeros(1, 3, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="q_positions"):
        ALiBi(2)(3, q_positions=torch.arange(4))


def test_implicit_bias_is_built_once_per_length_and_equals_explicit():
    alibi = ALiBi(3)
    first = alibi(10)
    cached = alibi.bias_cached
    step = alibi(1, 11, offset=10)  # one decoding step later: still inside the cached length
    assert alibi.bias_cached is cached and cached.shape[-1] == 256
    torch.testing.assert_close(step, alibi(1, 11, q_positions=torch.tensor([10]), k_positions=torch.arange(11)))
    torch.testing.assert_close(first, alibi(10, q_positions=torch.arange(10), k_positions=torch.arange(10)))
    alibi(300)
    assert alibi.bias_cached.shape[-1] == 512


def test_far_offset_and_decoding_compute_the_bias_without_a_table_from_zero():
    alibi = ALiBi(4)
    far = alibi(5, 5, offset=10**7)
    assert alibi.bias_cached.numel() == 0  # no (10^7, 10^7) cache
    ref = alibi(5, 5, q_positions=torch.arange(10**7, 10**7 + 5), k_positions=torch.arange(5))
    torch.testing.assert_close(far, ref)
    torch.testing.assert_close(far[0, 0], 0.25 * (torch.arange(5.0) - torch.arange(10**7, 10**7 + 5.0)[:, None]))
    step = alibi(1, offset=5000)  # one query against 5001 keys: (1, h, 1, m), no (L, L) table
    assert step.shape == (1, 4, 1, 5001) and alibi.bias_cached.numel() == 0
    torch.testing.assert_close(step[0, 1, 0, :3], -(5000 - torch.arange(3.0)) / 16)
    alibi(300)  # a full pass still builds and slices the cache
    assert alibi.bias_cached.shape[-1] >= 300


def test_a_bias_too_large_to_build_raises_with_its_size():
    with pytest.raises(ValueError, match=r"ALiBi bias .*n=1000000.*14\.6 TiB.*MAX_TABLE_BYTES"):
        ALiBi(4)(10**6)
    # explicit positions: checked before the (n, m) offsets are formed
    with pytest.raises(ValueError, match=r"n=10000, m=1000000\) would need 149\.0 GiB"):
        ALiBi(4)(10**4, 10**6, q_positions=torch.arange(10**4), k_positions=torch.arange(10**6))


@pytest.mark.parametrize("n, m", [(200, 200), (5, 150), (1, 90)])
def test_causal_block_term_adds_one_row_per_block_and_equals_the_materialised_bias(n, m):
    """The causal block term adds each block's bottom row to every row (``m_h (j - i)`` is linear in
    ``j``): several row blocks, a prompt after a cache and a decoding step give the attention of the
    materialised bias (float64)."""
    from posenc.attention import MaskSpec
    from posenc.attention.blocked import blocked_attention
    from posenc.core.positions import Positions

    torch.manual_seed(0)
    alibi = ALiBi(4, causal=True).double()
    q, k, v = torch.randn(2, 4, n, 8).double(), torch.randn(2, 4, m, 8).double(), torch.randn(2, 4, m, 8).double()
    qpos, kpos = Positions(n, offset=m - n), Positions(m)
    term = alibi.block_bias(q, k, q_positions=qpos, k_positions=kpos)
    got, weights = blocked_attention(q, k, v, bias_term=term, mask=MaskSpec(causal=True), need_weights=True)
    bias = alibi.score_bias(q, k, q_positions=qpos, k_positions=kpos).double()
    visible = torch.arange(m) <= (torch.arange(n) + m - n).unsqueeze(-1)
    logits = (q @ k.transpose(-1, -2) / 8**0.5 + bias).masked_fill(~visible, float("-inf"))
    torch.testing.assert_close(weights, logits.softmax(-1))
    torch.testing.assert_close(got, logits.softmax(-1) @ v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", [Positions(6), Positions(6, offset=3), Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2]]))])
def test_a_float64_model_gets_a_float64_bias(positions, causal):
    # the slopes and the bias were float32 whatever the model: with 12 heads a float64 model's bias was
    # off by 2.3e-6 at distance 49 from the paper's slopes (2^(-8/12 k) is not a float32 number)
    from helpers import assert_float64_attention_is_exact

    q = torch.zeros(1, 12, 50, 4, dtype=torch.float64)
    bias = ALiBi(12, causal=causal).score_bias(q, q, q_positions=Positions(50), k_positions=Positions(50))
    slopes = torch.tensor(reference_slopes(12), dtype=torch.float64)
    distance = (torch.arange(50)[None, :] - torch.arange(50)[:, None]).double()
    want = slopes[:, None, None] * (distance if causal else -distance.abs())
    assert bias.dtype == torch.float64
    torch.testing.assert_close(bias[0], want, rtol=0, atol=1e-13)
    assert_float64_attention_is_exact(ALiBi(2, causal=causal), positions, causal=causal)


# -- parity with peer libraries ---------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 3, 5, 6, 8, 12, 24, 31, 40])
def test_slopes_match_bloom_and_x_transformers(heads):
    """Hugging Face BLOOM's ``build_alibi_tensor`` (slopes formed in float32) and x-transformers' ``_get_slopes``."""
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    xt = pytest.importorskip("x_transformers.x_transformers")
    ours = alibi_slopes(heads, dtype=torch.float64)
    # BLOOM's bias is slope * key position, (heads, 1, m): the key at position 1 carries the slope
    theirs = bloom.build_alibi_tensor(torch.ones(1, 4), heads, torch.float64)[:, 0, 1]
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    # the official get_slopes, which x-transformers copies (start * ratio^i, so equal to the last bits)
    torch.testing.assert_close(ours, torch.tensor(xt.AlibiPositionalBias._get_slopes(heads), dtype=torch.float64))


def test_slopes_match_mpt_for_1_to_40_heads():
    """MPT's ``build_mpt_alibi_tensor`` (alibi_bias_max 8) takes the slopes of the next power of two, odd
    ones first: the same slopes as the paper's rule for every head count."""
    mpt = pytest.importorskip("transformers.models.mpt.modeling_mpt")
    for heads in range(1, 41):
        theirs = mpt.build_mpt_alibi_tensor(heads, 2)[:, 0].double()  # (heads, 2): slope * (key position - 1)
        torch.testing.assert_close(alibi_slopes(heads, dtype=torch.float64), theirs[:, 1] - theirs[:, 0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("heads", [3, 8, 12])
@pytest.mark.parametrize("n, m", [(5, 5), (3, 9), (1, 7)])
def test_bias_matches_x_transformers(heads, n, m):
    """x-transformers' ``-m_h |j - i|`` for the last n of m positions: ALiBi's symmetric form everywhere,
    the causal form on the keys a causal mask leaves visible."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    theirs = xt.AlibiPositionalBias(heads)(n, m).double()  # (heads, n, m)
    q, k = Positions(n, offset=m - n), Positions(m)
    symmetric = ALiBi(heads, causal=False).score_bias(None, None, q_positions=q, k_positions=k)[0].double()
    causal = ALiBi(heads).score_bias(None, None, q_positions=q, k_positions=k)[0].double()
    visible = torch.ones(n, m, dtype=torch.bool).tril(m - n)
    torch.testing.assert_close(symmetric, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(causal[:, visible], theirs[:, visible], rtol=1e-6, atol=0)


def test_heads_past_host_memory_are_refused_on_the_meta_device_too():
    # the slopes are Python floats on the host before they reach any device: 10**12 heads on the meta
    # device used to build a list of 10**12 floats (the process was killed without a message)
    from posenc.bias.alibi import alibi_slopes

    with pytest.raises(ValueError, match="`num_heads`=1000000000000 needs"):
        alibi_slopes(10**12, device="meta")
    with pytest.raises(ValueError, match="`heads`=1000000000000 needs"):
        ALiBi(heads=10**12, device="meta")
    assert alibi_slopes(8, device="meta").shape == (8,)

