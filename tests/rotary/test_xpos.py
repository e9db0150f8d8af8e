"""xPos (Sun et al. 2022, arXiv:2212.10554) against a float64 transcription of its equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc
from posenc.core.positions import Positions
from posenc.functional import apply_rope, apply_xpos
from posenc.models import Transformer
from posenc.rotary import XPos


def xpos_reference(x, positions, *, key, scale_base, base=10000.0, interleaved=False, reference=0):
    """Pair i at position n: rotate by n * base^(-2i/d), scale by zeta_i^(±(n - c) / scale_base),
    zeta_i = (2i/d + 0.4) / 1.4 (paper, section 3.2; c = 0 there), pair by pair in float64."""
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    d = x.shape[-1]
    for t, p in enumerate(positions):
        for i in range(d // 2):
            zeta = (2 * i / d + 0.4) / 1.4
            s = zeta ** ((-(p - reference) if key else p - reference) / scale_base)
            angle = p * base ** (-2 * i / d)
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
            x1, x2 = x[..., t, a], x[..., t, b]
            out[..., t, a] = s * (math.cos(angle) * x1 - math.sin(angle) * x2)
            out[..., t, b] = s * (math.sin(angle) * x1 + math.cos(angle) * x2)
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("key", [False, True])
def test_matches_reference_functional_and_module(interleaved, key):
    x = torch.randn(2, 2, 5, 8, dtype=torch.float64)
    pos = [0, 3, 40, 511, 2000]
    want = xpos_reference(x.numpy(), pos, key=key, scale_base=512.0, interleaved=interleaved)
    got = apply_xpos(x, torch.tensor(pos), key=key, interleaved=interleaved)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    module = XPos(8, interleaved=interleaved)
    side = "key" if key else "query"
    np.testing.assert_allclose(module(x, positions=torch.tensor(pos), side=side).numpy(), want, rtol=1e-12, atol=1e-12)
    implicit = module(x.float(), offset=7, side=side)
    want = xpos_reference(x.numpy(), range(7, 12), key=key, scale_base=512.0, interleaved=interleaved)
    np.testing.assert_allclose(implicit.double().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", [False, True])
def test_float64_implicit_positions_are_as_exact_as_explicit_ones(key):
    """A float64 input at implicit positions (the Transformer's default) gets float64 angles and
    scales, as at explicit positions; the float32 cached window served it before."""
    x = torch.randn(2, 2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    side = "key" if key else "query"
    module = XPos(8, scale_base=16.0)
    want = xpos_reference(x.numpy(), range(7, 12), key=key, scale_base=16.0)
    np.testing.assert_allclose(module(x, offset=7, side=side).numpy(), want, rtol=1e-12, atol=1e-12)
    implicit = module.rotate(x, x, q_positions=Positions(5, 7), k_positions=Positions(5, 7))
    explicit = module.rotate(x, x, q_positions=Positions(5, 7, torch.arange(7, 12)[None]),
                             k_positions=Positions(5, 7, torch.arange(7, 12)[None]))
    for got, want in zip(implicit, explicit):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(shift=st.integers(0, 20_000), i=st.integers(0, 64), j=st.integers(0, 64))
def test_score_depends_only_on_offset_and_decays(shift, i, j):
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 1, 1, 1, 16, dtype=torch.float64, generator=gen)

    def score(a, b):
        qa = apply_xpos(q, torch.tensor([a]), key=False, scale_base=512.0)
        kb = apply_xpos(k, torch.tensor([b]), key=True, scale_base=512.0)
        return (qa * kb).sum().item()

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), rel=1e-9, abs=1e-9)


def test_distant_pairs_decay():
    q = torch.ones(1, 1, 1, 8, dtype=torch.float64)
    scales = [apply_xpos(q, torch.tensor([n]), key=False, scale_base=64.0)[0, 0, 0].norm().item() for n in (0, 64, 640)]
    assert scales[0] > scales[1] > scales[2]


def test_parity_with_rotary_embedding_torch_scores():
    ret = pytest.importorskip("rotary_embedding_torch")
    theirs = ret.RotaryEmbedding(dim=16, use_xpos=True, xpos_scale_base=64)
    q, k = torch.randn(2, 1, 3, 9, 16, generator=torch.Generator().manual_seed(0))
    tq, tk = theirs.rotate_queries_and_keys(q, k)
    ours = XPos(16, scale_base=64.0, interleaved=True)
    oq, ok = ours.rotate(q, k, q_positions=Positions(9), k_positions=Positions(9))
    # they centre positions on n // 2 per call; the centre cancels in q·k
    torch.testing.assert_close(oq @ ok.transpose(-1, -2), tq @ tk.transpose(-1, -2), atol=1e-5, rtol=1e-5)


def test_transformer_cached_decoding_and_explicit_positions_equal_a_full_pass():
    torch.manual_seed(0)
    model = Transformer(16, 32, 1, 2, position="xpos", causal=True, scale_base=32.0).eval()
    tokens = torch.randint(0, 16, (2, 10))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        steps = [model(tokens[:, :4], cache=cache)] + [model(tokens[:, t : t + 1], cache=cache) for t in range(4, 10)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(tokens, positions=torch.arange(10)), full, atol=1e-6, rtol=0)
        torch.testing.assert_close(model(tokens, positions=torch.arange(100, 110)), full, atol=1e-4, rtol=0)


def test_positions_past_the_float32_range_raise():
    module = XPos(8, scale_base=16.0)
    x = torch.randn(1, 1, 2, 8)
    limit = module.max_position
    assert torch.isfinite(module(x, positions=torch.tensor([0, limit]), side="key")).all()
    assert torch.isfinite(module(x, offset=limit - 1)).all()
    for call in (lambda: module(x, offset=limit), lambda: module(x, positions=torch.tensor([0, limit + 1]))):
        with pytest.raises(ValueError, match="positions.*scale_base"):
            call()


def test_compiles_fullgraph_and_meta_device():
    torch._dynamo.reset()
    module = posenc.create("xpos", head_dim=8)
    x, p = torch.randn(1, 2, 6, 8), torch.arange(6)
    compiled = torch.compile(lambda x, p: module.rotate(x, x, q_positions=Positions(6, 0, p.unsqueeze(0)), k_positions=Positions(6)), fullgraph=True)
    for got, want in zip(compiled(x, p), module.rotate(x, x, q_positions=Positions(6), k_positions=Positions(6))):
        torch.testing.assert_close(got, want)
    assert XPos(8, device="meta").cos_cached.device.type == "meta"


def test_gradients_match_finite_differences():
    x = torch.randn(1, 1, 4, 8, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0, 5, 90, 400])
    for key in (False, True):
        assert torch.autograd.gradcheck(lambda t, key=key: apply_xpos(t, pos, key=key, scale_base=64.0), (x,))



def test_large_positions_with_a_reference_match_the_transcription_and_scores_ignore_it():
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 1, 2, 6, 8, dtype=torch.float64, generator=gen)
    far = torch.tensor([10**6 + p for p in (0, 7, 300, 2000, 5000, 9000)])
    c = 10**6 + 4500
    for x, key in ((q, False), (k, True)):
        want = xpos_reference(x.numpy(), far.tolist(), key=key, scale_base=128.0, reference=c)
        got = apply_xpos(x, far, key=key, scale_base=128.0, reference=c)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="reference"):
        apply_xpos(q, far, key=False, scale_base=128.0)  # measured from 0, 10^6 is out of float32's reach

    def scores(ref):
        qa = apply_xpos(q, far, key=False, scale_base=128.0, reference=ref)
        return qa @ apply_xpos(k, far, key=True, scale_base=128.0, reference=ref).transpose(-1, -2)

    torch.testing.assert_close(scores(10**6 + 1000), scores(c), rtol=1e-9, atol=0)
    torch.testing.assert_close(scores(10**6 + 8000), scores(c), rtol=1e-9, atol=0)


def test_module_reference_cached_decoding_at_large_positions_equals_a_full_pass():
    torch.manual_seed(1)
    enc = XPos(16, scale_base=32.0, reference=10**7)
    model = Transformer(16, 32, 1, 2, position=enc, causal=True).eval()
    tokens = torch.randint(0, 16, (2, 10))
    pos = torch.arange(10**7, 10**7 + 10)
    with torch.no_grad():
        full = model(tokens, positions=pos)
        enc.reference = 0
        near = model(tokens, positions=pos - 10**7)  # xPos and RoPE are relative: the same logits
        torch.testing.assert_close(full, near, atol=1e-4, rtol=0)
        enc.reference = 10**7
        cache = model.new_cache()
        steps = [model(tokens[:, :4], positions=pos[:4], cache=cache)]
        steps += [model(tokens[:, t : t + 1], positions=pos[t : t + 1], cache=cache) for t in range(4, 10)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        enc.reference = 0
        with pytest.raises(ValueError, match="reference"):
            model(tokens, positions=pos)


def test_range_is_around_the_reference_and_empty_calls_work():
    module = XPos(8, scale_base=16.0, reference=5000)
    x = torch.randn(1, 1, 2, 8)
    limit = module.max_position
    assert torch.isfinite(module(x, positions=torch.tensor([5000 - limit, 5000 + limit]), side="key")).all()
    assert torch.isfinite(module(x, positions=torch.tensor([5000 - limit, 5000 + limit]))).all()
    for bad in ([5000 - limit - 1, 5000], [5000, 5000 + limit + 1]):
        with pytest.raises(ValueError, match=f"reference ± {limit}"):
            module(x, positions=torch.tensor(bad))
    assert module(torch.randn(1, 1, 0, 8), offset=10**6).shape == (1, 1, 0, 8)
    with pytest.raises(TypeError, match="reference"):
        XPos(8, reference=float("nan"))


def test_float16_positions_past_its_range_are_refused_not_overflowed():
    """float16 keys scaled by 3.5 ** (n / 512) overflow to inf near n = 5,000 (and queries flush to zero),
    far inside float32's limit: float16 input has its own, smaller range and is refused past it."""
    torch.manual_seed(0)
    module = XPos(64)
    x = torch.randn(1, 2, 2, 64).half().float()  # values float16 holds
    far = torch.tensor([5000, 5001])
    for side in ("query", "key"):
        assert torch.isfinite(module(x.bfloat16(), positions=far, side=side)).all()
        with pytest.raises(ValueError, match=r"reference ± \d+ .*float16"):
            module(x.half(), positions=far, side=side)
        with pytest.raises(ValueError, match=r"reference ± \d+ .*float16"):
            apply_xpos(x.half(), far, key=side == "key")
    limit = posenc.rotary.xpos.xpos_max_position(64, 512.0, torch.float16)
    assert 3000 < limit < module.max_position
    inside = torch.tensor([limit - 1, limit])
    for side in ("query", "key"):
        half = module(x.half(), positions=inside, side=side)
        assert torch.isfinite(half).all()
        assert torch.allclose(half.float(), module(x, positions=inside, side=side), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("key", ["query", "no", 0, None])
def test_apply_xpos_refuses_a_side_that_is_not_a_bool(key):
    """``key`` picks the scale's sign; a string such as "query" is truthy and would scale as a key."""
    with pytest.raises(TypeError, match="`key` must be True or False"):
        apply_xpos(torch.randn(1, 1, 3, 8), torch.arange(3), key=key)


@pytest.mark.parametrize("rot, interpolation", [(16, 1.0), (8, 1.0), (8, 2.0)])
def test_parity_with_x_transformers_scores(rot, interpolation):
    """x-transformers' ``RotaryEmbedding(use_xpos=True)`` over the first ``rot`` features (its zeta from
    the rotated width, the tail unscaled), positions interpolated for the angles only, as ours with
    ``scaling="linear"``; its scales are centred on the middle position, which cancels in q·k."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    peer = xt.RotaryEmbedding(rot, use_xpos=True, scale_base=32, interpolation_factor=interpolation).double()
    peer.inv_freq = 10000.0 ** -(torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    peer.scale = (torch.arange(0, rot, 2, dtype=torch.float64) + 0.4 * rot) / (1.4 * rot)  # its zeta, in float64
    q, k = torch.randn(2, 1, 2, 9, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    freqs, scale = peer(torch.arange(9))
    tq, tk = xt.apply_rotary_pos_emb(q, freqs, scale), xt.apply_rotary_pos_emb(k, freqs, scale**-1)
    scaling = {"scaling": "linear", "factor": interpolation} if interpolation != 1.0 else {}
    ours = XPos(16, scale_base=32.0, interleaved=True, rotary_fraction=rot / 16, **scaling)
    oq, ok = ours.rotate(q, k, q_positions=Positions(9), k_positions=Positions(9))
    torch.testing.assert_close(oq @ ok.transpose(-1, -2), tq @ tk.transpose(-1, -2), rtol=0, atol=1e-10)


def test_cached_decoding_equals_rotary_embedding_torch_full_pass():
    """rotary-embedding-torch's ``rotate_queries_with_cached_keys`` centres the query scales on the
    queries' own middle and the key scales on the keys', so its cached scores differ from its full pass
    (by 0.63 here); ours, a query block at an offset against all keys, equal its full pass."""
    ret = pytest.importorskip("rotary_embedding_torch")
    peer = ret.RotaryEmbedding(dim=16, use_xpos=True, xpos_scale_base=32)
    q, k = torch.randn(2, 1, 2, 9, 16, generator=torch.Generator().manual_seed(3))
    fq, fk = peer.rotate_queries_and_keys(q, k)
    full = (fq @ fk.transpose(-1, -2))[..., -3:, :]
    oq, ok = XPos(16, scale_base=32.0, interleaved=True).rotate(
        q[..., -3:, :], k, q_positions=Positions(3, 6), k_positions=Positions(9)
    )
    torch.testing.assert_close(oq @ ok.transpose(-1, -2), full, rtol=0, atol=1e-5)


def test_a_scale_base_near_the_float64_limit_is_nearly_rope():
    """scale_base=1e308 once raised a bare OverflowError ('cannot convert float infinity to integer')
    from the position limit 80 * scale_base / |log zeta_0|; the limit is now capped at int64's largest."""
    x = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(5)
    out = apply_xpos(x, pos, key=False, scale_base=1e308)
    torch.testing.assert_close(out, apply_rope(x, pos))
    assert XPos(8, scale_base=1e308).max_position == 2**63 - 1


@pytest.mark.parametrize("explicit", [False, True])
def test_queries_before_the_last_key_rotated_for_the_keys_length_with_a_length_dependent_scaling(explicit):
    """Queries at 0..3, keys at 0..20 with dynamic NTK (L0 = 8): the scores equal the first four rows
    of a full pass over 0..20 (the queries used to get length 4's base, off by 0.6)."""
    torch.manual_seed(0)
    module = XPos(8, scaling="dynamic_ntk", factor=2.0, original_max_len=8)
    q, k = torch.randn(1, 1, 21, 8, dtype=torch.float64), torch.randn(1, 1, 21, 8, dtype=torch.float64)
    fq, fk = module.rotate(q, k, q_positions=Positions(21), k_positions=Positions(21))
    if explicit:
        q_positions, k_positions = Positions(4, 0, torch.arange(4)[None]), Positions(21, 0, torch.arange(21)[None])
    else:
        q_positions, k_positions = Positions(4), Positions(21)
    rq, rk = module.rotate(q[:, :, :4], k, q_positions=q_positions, k_positions=k_positions)
    torch.testing.assert_close(rq @ rk.transpose(-1, -2), fq[:, :, :4] @ fk.transpose(-1, -2), atol=1e-12, rtol=0)
