"""RoPE against a float64 transcription of the rotation-matrix form (Su et al. 2021, eq. 34)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.core.positions import Positions
from posenc.functional import apply_rope, apply_rope_qk
from posenc.rotary import RotaryPositionEncoding

# every test here runs twice: fused kernel forced on, and fusion switched off (tests/rotary/conftest.py)
pytestmark = pytest.mark.usefixtures("fusion_on_and_off")


def reference(x, positions, base=10000.0, interleaved=False, rot_dim=None, inv_freq=None, scale=1.0):
    """Rotate each feature pair of x (..., n, d) by p * theta_i, pair by pair, in float64."""
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    d = x.shape[-1]
    r = rot_dim or d
    for t, p in enumerate(positions):
        for i in range(r // 2):
            theta = inv_freq[i] if inv_freq is not None else base ** (-2 * i / r)
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + r // 2)
            c, s = math.cos(p * theta) * scale, math.sin(p * theta) * scale
            x1, x2 = x[..., t, a], x[..., t, b]
            out[..., t, a] = c * x1 - s * x2
            out[..., t, b] = s * x1 + c * x2
    return out


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rope_matches_reference(interleaved):
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    pos = torch.tensor([0, 1, 5, 17, 300])
    got = apply_rope(x, pos, interleaved=interleaved)
    np.testing.assert_allclose(got.numpy(), reference(x.numpy(), pos.tolist(), interleaved=interleaved), atol=1e-12)


@pytest.mark.parametrize("offset", [0, 10**6])
def test_module_gives_float64_inputs_float64_angles_at_implicit_positions(offset):
    x = torch.randn(1, 2, 40, 8, dtype=torch.float64)
    rope = RotaryPositionEncoding(8)
    got = rope(x, offset=offset)
    want = reference(x.numpy(), list(range(offset, offset + 40)))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(got, rope(x, positions=torch.arange(offset, offset + 40)), rtol=0, atol=0)


@pytest.mark.parametrize("explicit", [False, True])
def test_module_rotates_float64_keys_with_float64_angles_beside_float32_queries(explicit):
    # one angle look-up for q and k once followed q's dtype: float32 angles for float64 keys
    rope = RotaryPositionEncoding(8)
    q, k = torch.randn(1, 2, 6, 8), torch.randn(1, 1, 6, 8, dtype=torch.float64)
    values = [70005, 70003, 70001, 70002, 70000, 70004] if explicit else list(range(70000, 70006))
    positions = Positions(6, explicit=torch.tensor([values])) if explicit else Positions(6, 70000)
    got_q, got_k = rope.rotate(q, k, q_positions=positions, k_positions=positions)
    assert got_q.dtype == torch.float32 and got_k.dtype == torch.float64
    np.testing.assert_allclose(got_k.numpy(), reference(k.numpy(), values), atol=1e-12, rtol=0)
    np.testing.assert_allclose(got_q.numpy(), reference(q.numpy(), values), atol=1e-5, rtol=0)


def test_compiles_in_one_graph_with_dynamic_shapes():
    # dynamic=True makes Python floats symbolic (the default base, the module's base), and the check
    # of `base` once called math.isfinite on them, which dynamo cannot put in a graph
    rope = RotaryPositionEncoding(8)
    q, k, positions = torch.randn(2, 3, 5, 8), torch.randn(2, 1, 5, 8), torch.tensor([4, 0, 2, 1, 3])

    def step(q, k, positions):
        q1, k1 = apply_rope_qk(q, k, positions)
        return apply_rope(q1, positions, interleaved=True), k1, rope(q, positions=positions)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend="eager")
    for got, want in zip(compiled(q, k, positions), step(q, k, positions)):
        torch.testing.assert_close(got, want)


def test_apply_rope_batched_positions():
    x = torch.randn(2, 2, 4, 8)
    pos = torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13]])
    got = apply_rope(x, pos)
    torch.testing.assert_close(got[1:], apply_rope(x[1:], pos[1]))


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rope_qk_matches_reference_with_fewer_key_heads(interleaved):
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64, generator=gen)
    k = torch.randn(2, 2, 5, 8, dtype=torch.float64, generator=gen)  # grouped-query keys
    pos = torch.tensor([0, 1, 5, 17, 300])
    rq, rk = apply_rope_qk(q, k, pos, interleaved=interleaved)
    for got, x in ((rq, q), (rk, k)):
        ref = reference(x.numpy(), pos.tolist(), interleaved=interleaved)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_qk_equals_two_apply_rope_calls(dtype):
    gen = torch.Generator().manual_seed(6)
    q, k = (torch.randn(2, 2, 6, 16, generator=gen).to(dtype) for _ in range(2))
    pos = torch.tensor([[3, 4, 5, 6, 7, 8], [0, 0, 1, 2, 9, 40]])  # per-row positions, one of them a range
    rq, rk = apply_rope_qk(q, k, pos)
    torch.testing.assert_close(rq, apply_rope(q, pos), atol=0, rtol=0)
    torch.testing.assert_close(rk, apply_rope(k, pos), atol=0, rtol=0)
    # q and k of different dtypes: each in its own precision, at the wider dtype's angles
    rq64, rk32 = apply_rope_qk(q.double(), k.float(), pos)
    torch.testing.assert_close(rq64, apply_rope(q.double(), pos))
    torch.testing.assert_close(rk32, apply_rope(k.float(), pos), atol=1e-6, rtol=1e-6)


def test_apply_rope_qk_draws_one_set_of_random_positions_for_both():
    q = torch.randn(2, 1, 4, 8)
    rq, rk = apply_rope_qk(q, q.clone(), None, randomize_positions=50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rq, rk)  # same input and the same positions
    # the rotation is by positions drawn from [0, 50): it differs from rotating at 0..3
    assert not torch.allclose(rq, apply_rope(q, torch.arange(4)))


def test_apply_rope_qk_gradients_and_inplace():
    q = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 5, 8, dtype=torch.float64, requires_grad=True)
    pos = torch.arange(2, 7)
    assert torch.autograd.gradcheck(lambda a, b: apply_rope_qk(a, b, pos), (q, k))
    qi, ki = q.detach().clone(), k.detach().clone()
    out = apply_rope_qk(qi, ki, pos, inplace=True)
    assert out[0].data_ptr() == qi.data_ptr() and out[1].data_ptr() == ki.data_ptr()
    torch.testing.assert_close((qi, ki), apply_rope_qk(q.detach(), k.detach(), pos))


def test_apply_rope_qk_names_the_bad_argument():
    q, pos = torch.randn(1, 2, 4, 8), torch.arange(4)
    with pytest.raises(ValueError, match="`k`"):
        apply_rope_qk(q, torch.randn(1, 2, 5, 8), pos)  # another length
    with pytest.raises(ValueError, match="`k`"):
        apply_rope_qk(q, torch.randn(2, 2, 4, 8), pos)  # another batch
    with pytest.raises(ValueError, match="`q`"):
        apply_rope_qk(torch.randn(2, 4, 8), torch.randn(2, 4, 8), pos)
    with pytest.raises(ValueError, match="`positions`"):
        apply_rope_qk(q, q, torch.arange(5))


@pytest.mark.parametrize("interleaved", [False, True])
def test_module_partial_rotation_and_base(interleaved):
    rope = RotaryPositionEncoding(12, base=500.0, rotary_fraction=0.5, interleaved=interleaved)
    assert rope.rot_dim == 6
    x = torch.randn(1, 2, 7, 12, dtype=torch.float64)
    got = rope(x, offset=4)
    ref = reference(x.numpy(), range(4, 11), base=500.0, interleaved=interleaved, rot_dim=6)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    np.testing.assert_array_equal(got[..., 6:].numpy(), x[..., 6:].numpy())


def test_explicit_equals_implicit_and_cache_grows():
    rope = RotaryPositionEncoding(8, cache_len=4)
    x = torch.randn(2, 2, 10, 8)
    implicit = rope(x, offset=5)
    explicit = rope(x, positions=torch.arange(5, 15))
    torch.testing.assert_close(implicit, explicit)
    assert rope.cos_cached.shape[0] >= 15
    torch.testing.assert_close(implicit, apply_rope(x, torch.arange(5, 15)))


@given(shift=st.integers(0, 5000), i=st.integers(0, 64), j=st.integers(0, 64))
def test_logit_depends_only_on_offset(shift, i, j):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 1, 16, dtype=torch.float64, generator=gen)
    k = torch.randn(1, 1, 1, 16, dtype=torch.float64, generator=gen)

    def logit(pi, pj):
        return (apply_rope(q, torch.tensor([pi])) * apply_rope(k, torch.tensor([pj]))).sum().item()

    assert logit(i, j) == pytest.approx(logit(i + shift, j + shift), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_model_at_large_positions_matches_float64(dtype):
    rope = RotaryPositionEncoding(64).to(dtype)
    assert rope.cos_cached.dtype == torch.float32  # rebuilt, not cast
    x = torch.randn(1, 1, 6, 64).to(dtype)
    positions = torch.tensor([0, 256, 257, 65537, 99999, 100000])
    got = rope(x, positions=positions)
    assert got.dtype == dtype
    ref = torch.from_numpy(reference(x.double().numpy(), positions.tolist()))
    torch.testing.assert_close(got.double(), ref, atol=2e-2, rtol=1.6e-2)
    # implicit positions through the cache, with model.to(bfloat16) applied after the cache was built
    rope2 = RotaryPositionEncoding(64, cache_len=8)
    rope2(torch.randn(1, 1, 8, 64))
    rope2 = rope2.to(dtype)
    got2 = rope2(x[:, :, :2], offset=99998)
    ref2 = torch.from_numpy(reference(x[:, :, :2].double().numpy(), [99998, 99999]))
    torch.testing.assert_close(got2.double(), ref2, atol=2e-2, rtol=1.6e-2)


def test_hook_rotates_queries_and_keys():
    rope = RotaryPositionEncoding(8)
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    rq, rk = rope.rotate(q, k, q_positions=Positions(3, 2), k_positions=Positions(3, 2))
    torch.testing.assert_close(rq, apply_rope(q, torch.arange(2, 5)))
    torch.testing.assert_close(rk, apply_rope(k, torch.arange(2, 5)))


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8},
        {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8, "dynamic_update": "grow_only"},
        {"scaling": "longrope", "original_max_len": 8, "max_len": 32, "short_factor": [1.0] * 4,
         "long_factor": [2.0, 3.0, 4.0, 5.0]},
    ],
)
def test_queries_and_keys_at_different_positions_share_the_length_of_the_furthest(kwargs, explicit):
    """Queries at 0..3, keys at 0..20 (L0 = 8): both sides rotated for length 21, as a full pass over
    the keys' positions would (dynamic NTK's base 10^4 * (2 * 21 / 8 - 1)^(8/6), LongRoPE's long
    factors and attention factor sqrt(1 + ln 4 / ln 8)); the queries used to get length 4's."""
    torch.manual_seed(0)
    rope = RotaryPositionEncoding(8, **kwargs)
    q, k = torch.randn(1, 2, 4, 8, dtype=torch.float64), torch.randn(1, 1, 21, 8, dtype=torch.float64)
    if kwargs["scaling"] == "dynamic_ntk":
        base = 10000.0 * (2.0 * 21 / 8 - 1.0) ** (8 / 6)
        inv_freq, scale = [base ** (-2 * i / 8) for i in range(4)], 1.0
    else:
        inv_freq = [10000.0 ** (-2 * i / 8) / f for i, f in enumerate(kwargs["long_factor"])]
        scale = math.sqrt(1 + math.log(4) / math.log(8))
    if explicit:
        q_positions, k_positions = Positions(4, 0, torch.arange(4)[None]), Positions(21, 0, torch.arange(21)[None])
    else:
        q_positions, k_positions = Positions(4), Positions(21)
    rq, rk = rope.rotate(q, k, q_positions=q_positions, k_positions=k_positions)
    want_q = reference(q.numpy(), range(4), inv_freq=inv_freq, scale=scale)
    want_k = reference(k.numpy(), range(21), inv_freq=inv_freq, scale=scale)
    np.testing.assert_allclose(rq.numpy(), want_q, atol=1e-12)
    np.testing.assert_allclose(rk.numpy(), want_k, atol=1e-12)


@pytest.mark.parametrize("explicit", [False, True])
def test_cos_sin_in_the_dtype_asked_for(explicit):
    """Implicit positions used to return the float32 window whatever ``dtype`` said (off by 1e-7 from
    float64 at 99998); an integer dtype truncated the table to integers."""
    rope = RotaryPositionEncoding(8, scaling="linear", factor=2.0)
    positions = Positions(3, 99998, torch.arange(99998, 100001)[None] if explicit else None)
    cos, sin = rope.cos_sin(positions, dtype=torch.float64)
    inv_freq = [10000.0 ** (-2 * i / 8) / 2.0 for i in range(4)]
    angles = np.array([[p * f for f in inv_freq] for p in range(99998, 100001)])
    assert cos.dtype == sin.dtype == torch.float64
    np.testing.assert_allclose(cos[0].numpy(), np.cos(angles), atol=1e-11)
    np.testing.assert_allclose(sin[0].numpy(), np.sin(angles), atol=1e-11)
    with pytest.raises(ValueError, match="dtype"):
        rope.cos_sin(positions, dtype=torch.int64)


@pytest.mark.parametrize("q_width, k_width, name", [(6, 6, "q"), (8, 6, "k"), (10, 10, "q")])
def test_hook_refuses_heads_of_another_width(q_width, k_width, name):
    """Narrower heads used to fail inside torch (without fusion: 'The size of tensor a (3) must match
    the size of tensor b (4)'); wider ones had their last features passed through unrotated."""
    rope = RotaryPositionEncoding(8)
    q, k = torch.randn(1, 2, 3, q_width), torch.randn(1, 1, 3, k_width)
    with pytest.raises(ValueError, match=f"`{name}` must have last dimension head_dim=8"):
        rope.rotate(q, k, q_positions=Positions(3), k_positions=Positions(3))
    with pytest.raises(ValueError, match="`qkv` must have last dimension head_dim=8"):
        rope.rotate_qkv(torch.randn(3, 1, 2, 3, 10), q_positions=Positions(3), k_positions=Positions(3))


@pytest.mark.parametrize(
    "q_positions, k_positions, name",
    [(Positions(1, 4), Positions(1, 4), "q"), (Positions(5), Positions(1, 4), "k"),
     (Positions(1, explicit=torch.tensor([[4]])), Positions(5), "q")],
)
def test_hook_refuses_fewer_positions_than_tokens(q_positions, k_positions, name):
    """One position for five tokens (the new token's position beside the whole prefix, in a hand-written
    decoding loop) broadcast its angles over every token: all five were rotated alike, without a word."""
    from posenc.rotary import XPos
    from posenc.rotary.hybrid import AttentionTemperature, NoRope

    q = k = torch.randn(1, 2, 5, 8)
    for encoding in (RotaryPositionEncoding(8), XPos(8)):
        with pytest.raises(ValueError, match=f"`{name}` has 5 tokens .* but `{name}_positions` holds 1"):
            encoding.rotate(q, k, q_positions=q_positions, k_positions=k_positions)
        with pytest.raises(ValueError, match=f"`{name}` has 5 tokens .* but `{name}_positions` holds 1"):
            encoding.rotate_qkv(torch.randn(3, 1, 2, 5, 8), q_positions=q_positions, k_positions=k_positions)
    if name == "q":
        with pytest.raises(ValueError, match="`q` has 5 tokens .* but `q_positions` holds 1"):
            NoRope(AttentionTemperature(floor_scale=2.0)).rotate(q, k, q_positions=q_positions, k_positions=k_positions)


def test_not_in_state_dict_and_meta_device():
    rope = RotaryPositionEncoding(8)
    assert rope.state_dict() == {}
    meta = RotaryPositionEncoding(8, device="meta")
    assert meta.cos_cached.is_meta
    meta = meta.to_empty(device="cpu")
    x = torch.randn(1, 1, 4, 8)
    torch.testing.assert_close(meta(x), apply_rope(x, torch.arange(4)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"head_dim": 1}, "head_dim"),
        ({"head_dim": 8, "base": 0.0}, "base"),
        ({"head_dim": 8, "rotary_fraction": 1.5}, "rotary_fraction"),
        ({"head_dim": 8, "rotary_fraction": 0.1}, "rotary_fraction"),
        ({"head_dim": 8, "scaling": "cubic"}, "scaling"),
        ({"head_dim": 8, "scaling": "yarn", "factor": 2.0}, "original_max_len"),
        ({"head_dim": 8, "scaling": "linear", "factor": 0.5}, "factor"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryPositionEncoding(**kwargs)


def test_bad_apply_arguments():
    with pytest.raises(ValueError, match="x"):
        apply_rope(torch.randn(2, 4, 8), torch.arange(4))
    with pytest.raises(ValueError, match="pairs"):
        apply_rope(torch.randn(1, 1, 4, 7), torch.arange(4))
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(1, 1, 4, 8), torch.arange(5))
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(1, 1, 4, 8), torch.arange(4).to(torch.bfloat16))
    with pytest.raises(ValueError, match="batch"):
        apply_rope(torch.randn(2, 1, 4, 8), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="head_dim=8"):
        RotaryPositionEncoding(8)(torch.randn(1, 1, 4, 6))


@pytest.mark.parametrize("shape", [(), (4, 1), (1,)])
def test_rotate_pairs_refuses_angles_not_given_for_every_pair(shape):
    # a last axis of 1 broadcasts in torch, but its length is the number of pairs rotated: such
    # angles once rotated the first pair only (and 0-d ones raised from inside the rotation)
    from posenc.rotary.rope import rotate_pairs

    x, theta = torch.randn(1, 2, 4, 8), torch.rand(shape)
    with pytest.raises(ValueError, match="all 4 entries along their last axis"):
        rotate_pairs(x, theta.cos(), theta.sin())


@pytest.mark.parametrize("interleaved", [False, True])
def test_fast_paths_equal_plain_rotation_and_gradients_check(interleaved):
    from posenc.rotary.rope import rotate_pairs
    from posenc.rotary.rotation import rotate_expr

    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    theta = torch.rand(5, 4, dtype=torch.float64) * 10
    cos, sin = theta.cos(), theta.sin()
    torch.testing.assert_close(rotate_pairs(x, cos, sin, interleaved=interleaved), rotate_expr(x, cos, sin, interleaved))
    assert torch.autograd.gradcheck(lambda t: rotate_pairs(t, cos, sin, interleaved=interleaved), (x,))
    # a strided view (as queries sliced from a fused qkv projection are) takes the same path
    qkv = torch.randn(2, 5, 3, 3, 8)
    q = qkv.permute(2, 0, 3, 1, 4)[1]
    torch.testing.assert_close(
        rotate_pairs(q, cos.float(), sin.float(), interleaved=interleaved), rotate_expr(q, cos.float(), sin.float(), interleaved)
    )


def test_far_offset_uses_a_window_not_a_table_from_zero():
    rope = RotaryPositionEncoding(64, cache_len=16)
    x = torch.randn(1, 2, 5, 64, dtype=torch.float64).float()
    got = rope(x, offset=10**7)
    assert rope.cos_cached.shape[0] <= 16  # kilobytes: the window around the positions in use
    ref = reference(x.double().numpy(), range(10**7, 10**7 + 5))
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-5)
    torch.testing.assert_close(got, rope(x, positions=torch.arange(10**7, 10**7 + 5)))


def test_decoding_across_window_boundaries_matches_explicit_positions():
    rope = RotaryPositionEncoding(8, cache_len=4)
    x = torch.randn(1, 1, 1, 8)
    for p in [0, 3, 4, 5, 9, 2, 40, 41, 1000]:
        torch.testing.assert_close(rope(x, offset=p), apply_rope(x, torch.tensor([p])))
        assert rope.cos_cached.shape[0] == 4
    wide = torch.randn(1, 1, 6, 8)
    torch.testing.assert_close(rope(wide, offset=1001), apply_rope(wide, torch.arange(1001, 1007)))
    assert rope.cos_cached.shape[0] == 8  # grown to hold 6 tokens at once, not to position 1007


def test_positions_past_the_supported_maximum_raise():
    rope = RotaryPositionEncoding(8)
    with pytest.raises(ValueError, match="offset.*largest supported position 4294967296"):
        rope(torch.randn(1, 1, 5, 8), offset=2**40)
    q = torch.randn(1, 1, 1, 8)
    torch.testing.assert_close(rope(q, offset=2**32), apply_rope(q, torch.tensor([2**32])))


_SCALED = [
    {},
    {"scaling": "yarn", "factor": 4.0, "original_max_len": 16},
    {"scaling": "llama3", "factor": 8.0, "original_max_len": 16},
    {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 16, "dynamic_update": "grow_only"},
    {"scaling": "longrope", "original_max_len": 16, "short_factor": [1.0 + i / 4 for i in range(4)],
     "long_factor": [1.0 + 2 * i for i in range(4)], "max_len": 64},
]


@pytest.mark.parametrize("kwargs", _SCALED)
def test_explicit_integer_positions_from_the_table_equal_the_computed_angles(kwargs):
    # integer positions on the CPU are gathered from the cached window; float ones are computed
    looked_up = RotaryPositionEncoding(8, cache_len=4, **kwargs)
    computed = RotaryPositionEncoding(8, cache_len=4, **kwargs)
    for rows in ([[3, 5, 4, 40], [7, 6, 9, 8]], [[30, 31, 32, 33]] * 2, [[0, 1, 2, 3]]):
        pos = torch.tensor(rows)
        if len(rows) == 2 and rows[0] == rows[1]:
            pos = pos[:1].expand(2, -1)  # transformers' expanded position_ids
        cos, sin = looked_up.cos_sin(Positions(4, explicit=pos))
        ref_cos, ref_sin = computed.cos_sin(Positions(4, explicit=pos.double()))
        assert cos.shape == ref_cos.shape == (pos.shape[0], 4, 4) and cos.dtype == torch.float32
        torch.testing.assert_close(cos, ref_cos, atol=1e-6, rtol=0)
        torch.testing.assert_close(sin, ref_sin, atol=1e-6, rtol=0)


def test_explicit_positions_spread_wide_are_computed_not_tabled():
    rope = RotaryPositionEncoding(8, cache_len=4)
    pos = torch.tensor([[0, 10**6]])
    cos, _ = rope.cos_sin(Positions(2, explicit=pos))
    assert rope.cos_cached.shape[0] == 4  # no million-row window
    theta = 10**6 * RotaryPositionEncoding(8).inverse_frequencies()
    torch.testing.assert_close(cos[0, 1].double(), torch.cos(theta), atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_explicit_positions_of_every_integer_dtype_gathered_from_the_window(dtype):
    # index_select takes int64 and int32 indices only: narrower positions once raised from inside torch
    rope = RotaryPositionEncoding(8, cache_len=4)
    q, k = torch.randn(2, 3, 4, 8), torch.randn(2, 1, 4, 8)
    for rows in ([[3, 5, 4, 7]], [[3, 5, 4, 7], [0, 1, 2, 3]], [[10, 11, 12, 13]]):
        pos = torch.tensor(rows)
        narrow, wide = Positions(4, explicit=pos.to(dtype)), Positions(4, explicit=pos)
        got = rope.rotate(q, k, q_positions=narrow, k_positions=narrow)
        want = rope.rotate(q, k, q_positions=wide, k_positions=wide)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=0, rtol=0)
        torch.testing.assert_close(rope(q, positions=pos[0].to(dtype)), rope(q, positions=pos[0]), atol=0, rtol=0)


# -- parity with peer libraries ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rot, peer_kwargs, ours_kwargs",
    [
        (16, {}, {}),
        (8, {}, {"rotary_fraction": 0.5}),  # GPT-J's partial rotary: the tail passes through
        (16, {"interpolation_factor": 2.0}, {"scaling": "linear", "factor": 2.0}),
        (16, {"base_rescale_factor": 4.0}, {"scaling": "ntk", "factor": 4.0}),  # bloc97's base * s^(d/(d-2))
        (16, {"base": 500000}, {"base": 500000.0}),
    ],
)
def test_matches_x_transformers_rotary_embedding(rot, peer_kwargs, ours_kwargs):
    """x-transformers' ``RotaryEmbedding`` + ``apply_rotary_pos_emb`` (adjacent pairs), its inverse
    frequencies recomputed in float64 from its own (rescaled) base."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    peer = xt.RotaryEmbedding(rot, **peer_kwargs).double()
    base = peer_kwargs.get("base", 10000) * peer_kwargs.get("base_rescale_factor", 1.0) ** (rot / (rot - 2))
    peer.inv_freq = base ** -(torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    x = torch.randn(2, 3, 7, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    freqs, scale = peer(torch.arange(5, 12))
    want = xt.apply_rotary_pos_emb(x, freqs, scale)
    got = RotaryPositionEncoding(16, interleaved=True, **ours_kwargs)(x, offset=5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "peer_kwargs, ours_kwargs, offset",
    [
        ({}, {}, 0),
        ({"interpolate_factor": 4.0}, {"scaling": "linear", "factor": 4.0}, 3),
        ({"theta_rescale_factor": 2.0}, {"scaling": "ntk", "factor": 2.0}, 0),
        ({"theta": 500}, {"base": 500.0}, 11),
    ],
)
@pytest.mark.parametrize("seq_before_head_dim", [False, True])
def test_matches_rotary_embedding_torch(peer_kwargs, ours_kwargs, offset, seq_before_head_dim):
    """rotary-embedding-torch's ``rotate_queries_or_keys`` over the first 8 of 16 features (float64
    frequencies), heads before or after the sequence axis, with its ``offset``."""
    ret = pytest.importorskip("rotary_embedding_torch")
    peer = ret.RotaryEmbedding(8, seq_before_head_dim=seq_before_head_dim, cache_if_possible=False, **peer_kwargs)
    base = peer_kwargs.get("theta", 10000) * peer_kwargs.get("theta_rescale_factor", 1.0) ** (8 / 6)
    with torch.no_grad():
        peer.freqs.data = base ** -(torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    x = torch.randn(2, 3, 7, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if seq_before_head_dim:
        want = peer.rotate_queries_or_keys(x.transpose(1, 2), offset=offset).transpose(1, 2)
    else:
        want = peer.rotate_queries_or_keys(x, offset=offset)
    got = RotaryPositionEncoding(16, rotary_fraction=0.5, interleaved=True, **ours_kwargs)(x, offset=offset)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attention_factor": 2.0}, {"beta_fast": 16.0}, {"mscale": 0.707, "mscale_all_dim": 0.707},
        {"truncate": False}, {"dynamic_update": "grow_only"}, {"factor": 8.0}, {"short_factor": [1.0] * 4},
    ],
)
def test_scaling_parameters_beside_a_rope_scaling_are_refused_not_ignored(kwargs):
    """A RopeScaling carries its parameters: one given beside it (attention_factor=2.0 with a YaRN scaling)
    used to be dropped without a word, leaving YaRN's own attention factor 1.139."""
    from posenc.rotary import RopeScaling

    yarn = RopeScaling("yarn", factor=4.0, original_max_len=8)
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`.* belong in the RopeScaling"):
        RotaryPositionEncoding(8, scaling=yarn, **kwargs)
    # the defaults, given or not, are not parameters of another scaling
    module = RotaryPositionEncoding(8, scaling=yarn, beta_fast=32.0, truncate=True, dynamic_update="recompute")
    assert module.scaling is yarn
