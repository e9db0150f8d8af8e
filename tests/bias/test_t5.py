"""T5 relative buckets against a per-element float64 transcription of Mesh TensorFlow's rule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.bias import T5RelativeBias
from posenc.core.positions import Positions
from posenc.functional import t5_relative_bucket


def reference_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """One offset (key - query) at a time, as in ``_relative_position_bucket``."""
    ret = 0
    n = -rel  # Mesh TF works with query - key
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (16, 64)])
def test_buckets_match_reference(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-300, 301)
    got = t5_relative_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    want = [reference_bucket(r, bidirectional, num_buckets, max_distance) for r in rel.tolist()]
    assert got.tolist() == want
    assert got.dtype == torch.long and got.min() >= 0 and got.max() < num_buckets


def test_known_values():
    # bidirectional, 32 buckets: offsets 0..7 exact, keys after the query start at bucket 16
    got = t5_relative_bucket(torch.tensor([0, -1, -7, 1, 7, -1000, 1000]))
    assert got.tolist() == [0, 1, 7, 17, 23, 15, 31]


@given(shift=st.integers(0, 50000), n=st.integers(1, 5))
def test_bias_depends_only_on_offset(shift, n):
    t5 = T5RelativeBias(2)
    base = t5(n)
    moved = t5(n, q_positions=torch.arange(n) + shift, k_positions=torch.arange(n) + shift)
    torch.testing.assert_close(base, moved)


def test_bias_is_the_learned_scalar_of_the_bucket():
    t5 = T5RelativeBias(3, causal=True, num_buckets=8, max_distance=16)
    bias = t5(6)
    for i in range(6):
        for j in range(6):
            bucket = reference_bucket(j - i, False, 8, 16)
            torch.testing.assert_close(bias[0, :, i, j], t5.bias.weight[bucket])
    # a cached step reads the last row
    torch.testing.assert_close(t5(1, 6, offset=5), bias[:, :, 5:])


def test_state_dict_and_meta():
    t5 = T5RelativeBias(2)
    other = T5RelativeBias(2)
    other.load_state_dict(t5.state_dict())
    torch.testing.assert_close(other(4), t5(4))
    meta = T5RelativeBias(2, device="meta")
    assert meta.bias.weight.is_meta


def test_bad_input():
    with pytest.raises(ValueError, match="relative_position"):
        t5_relative_bucket(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="num_buckets"):
        t5_relative_bucket(torch.tensor([1]), num_buckets=31)
    with pytest.raises(ValueError, match="max_distance"):
        t5_relative_bucket(torch.tensor([1]), num_buckets=32, max_distance=4)
    with pytest.raises(ValueError, match="heads"):
        T5RelativeBias(0)
    with pytest.raises(ValueError, match="num_buckets"):
        T5RelativeBias(2, num_buckets=2)


def test_implicit_buckets_are_cached_and_equal_explicit():
    t5 = T5RelativeBias(2, causal=True)
    torch.testing.assert_close(t5(7), t5(7, q_positions=torch.arange(7), k_positions=torch.arange(7)))
    cached = t5.buckets_cached
    torch.testing.assert_close(t5(1, 8, offset=7), t5(1, 8, q_positions=torch.tensor([7]), k_positions=torch.arange(8)))
    assert t5.buckets_cached is cached and "buckets_cached" not in t5.state_dict()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m,offset", [(5, 5, 0), (2, 9, 7), (6, 3, 1)])
def test_gradient_by_diagonal_equals_per_pair(causal, n, m, offset):
    # implicit positions sum the gradient along diagonals; explicit ones scatter it pair by pair
    torch.manual_seed(0)
    t5 = T5RelativeBias(3, causal=causal, num_buckets=8, max_distance=6).double()
    probe = torch.randn(1, 3, n, m, dtype=torch.float64)
    (t5(n, m, offset=offset) * probe).sum().backward()
    implicit = t5.bias.weight.grad.clone()
    t5.bias.weight.grad = None
    q, k = torch.arange(offset, offset + n), torch.arange(m)
    (t5(n, m, q_positions=q, k_positions=k, offset=offset) * probe).sum().backward()
    torch.testing.assert_close(implicit, t5.bias.weight.grad)


def test_far_offset_computes_the_buckets_in_use_only():
    t5 = T5RelativeBias(2, num_buckets=8, max_distance=16)
    far = t5(5, 5, offset=10**7)
    assert t5.buckets_cached.numel() == 0  # no cache over offsets -(10^7) .. 10^7
    torch.testing.assert_close(far, t5(5, 5, q_positions=torch.arange(10**7, 10**7 + 5), k_positions=torch.arange(5)))
    expected = [reference_bucket(j - i, num_buckets=8, max_distance=16) for i in range(10**7, 10**7 + 5) for j in range(5)]
    torch.testing.assert_close(far[0, 0].flatten(), t5.bias.weight[expected, 0])


@pytest.mark.parametrize("attention", ["eager", "blocked", "flex"])
def test_float_positions_are_refused_naming_the_positions(attention):
    # a model given float positions failed with "`relative_position` must be an integer tensor",
    # naming an argument of an internal call instead of the `positions` passed
    from posenc.models import Transformer

    model = Transformer(11, 16, 1, 2, position="t5", attention=attention).eval()
    with pytest.raises(ValueError, match=r"`positions` must be an integer tensor for the T5 bias.*torch.float32"):
        model(torch.zeros(1, 4, dtype=torch.long), positions=torch.tensor([0.0, 0.5, 1.0, 2.5]))


def test_a_bias_too_large_to_build_raises_with_its_size():
    with pytest.raises(ValueError, match=r"T5 bias .*n=1000000.*TiB.*MAX_TABLE_BYTES"):
        T5RelativeBias(4)(10**6)


# -- parity with peer libraries ---------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (10, 30), (16, 64), (64, 256)])
def test_buckets_match_transformers_and_x_transformers(bidirectional, num_buckets, max_distance):
    """Offsets on both sides of the query, out to three times ``max_distance`` (all in the last buckets)."""
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    xt = pytest.importorskip("x_transformers.x_transformers")
    rel = torch.arange(-3 * max_distance, 3 * max_distance + 1)  # key - query, as both peers take it
    ours = t5_relative_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    hf = t5.T5Attention._relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    xtb = xt.RelativePositionBias._relative_position_bucket(
        rel, causal=not bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert torch.equal(ours, hf) and torch.equal(ours, xtb)


@pytest.mark.parametrize("decoder", [False, True])
@pytest.mark.parametrize("n, m", [(7, 7), (1, 60), (3, 60)])
def test_bias_matches_transformers_compute_bias_while_decoding(decoder, n, m):
    """transformers' ``T5Attention.compute_bias`` for the last n of m positions (``past_seen_tokens``),
    the encoder's bidirectional and the decoder's causal buckets, the table copied."""
    transformers = pytest.importorskip("transformers")
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    config = transformers.T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=16,
                                   relative_attention_max_distance=40, is_decoder=decoder)
    torch.manual_seed(0)
    peer = t5.T5Attention(config, has_relative_attention_bias=True).double()
    ours = T5RelativeBias(4, causal=decoder, num_buckets=16, max_distance=40).double()
    with torch.no_grad():
        ours.bias.weight.copy_(peer.relative_attention_bias.weight)
    want = peer.compute_bias(n, m, past_seen_tokens=m - n)[0]
    got = ours.score_bias(None, None, q_positions=Positions(n, m - n), k_positions=Positions(m))[0]
    assert torch.equal(got, want)


def test_bucket_cache_filled_on_meta_is_rebuilt_by_to_empty():
    # a shape-inference forward on meta fills the implicit-position bucket cache; to_empty must not
    # leave it holding uninitialised memory read as bucket indices
    reference = T5RelativeBias(2, causal=True, num_buckets=8, max_distance=16)
    meta = T5RelativeBias(2, causal=True, num_buckets=8, max_distance=16, device="meta")
    assert meta(5).is_meta
    meta.to_empty(device="cpu")
    meta.load_state_dict(reference.state_dict())
    torch.testing.assert_close(meta(5), reference(5), atol=0, rtol=0)
