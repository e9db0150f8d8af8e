"""RoPE with learned frequencies: equals RoPE at initialisation, float64 reference at any frequencies,
offset-only logits, gradcheck of the frequency gradient, explicit = implicit positions, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.core.positions import Positions
from posenc.functional import apply_rope, apply_rope_learned
from posenc.models import Transformer
from posenc.rotary import LearnedRope


def reference(x: torch.Tensor, positions, freqs) -> torch.Tensor:
    """x (b, h, n, d); freqs (h, d/2) as nested lists; split-halves pairs, transcribed per pair."""
    out = x.clone()
    half = x.shape[-1] // 2
    for head in range(x.shape[1]):
        for t, p in enumerate(positions):
            for j in range(half):
                c, s = math.cos(p * freqs[head][j]), math.sin(p * freqs[head][j])
                a0, a1 = x[:, head, t, j], x[:, head, t, j + half]
                out[:, head, t, j] = c * a0 - s * a1
                out[:, head, t, j + half] = s * a0 + c * a1
    return out


def test_initialised_to_rope():
    x = torch.randn(2, 3, 6, 8)
    module = LearnedRope(8, heads=3)
    torch.testing.assert_close(module(x, offset=4), apply_rope(x, torch.arange(4, 10)), rtol=0, atol=1e-6)


def test_matches_float64_reference_at_learned_frequencies():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, generator=g)
    freqs = torch.rand(2, 3, dtype=torch.float64, generator=g) * 3
    positions = [0.0, 2.5, 1000.0, 123456.0]
    out = apply_rope_learned(x, torch.tensor(positions, dtype=torch.float64), freqs)
    torch.testing.assert_close(out, reference(x, positions, freqs.tolist()), rtol=1e-9, atol=1e-9)
    out32 = apply_rope_learned(x.float(), torch.tensor(positions, dtype=torch.float64), freqs.float())
    ref32 = reference(x, positions, freqs.float().double().tolist())  # the float32 frequencies, exactly
    torch.testing.assert_close(out32.double(), ref32, rtol=0, atol=2e-6)


def test_frequency_gradient():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    freqs = torch.rand(2, 2, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0.0, 3.0, 40.0], dtype=torch.float64)
    torch.autograd.gradcheck(lambda f: apply_rope_learned(x, pos, f), (freqs,))


def test_gradient_reaches_frequencies_in_a_model():
    model = Transformer(20, 16, 2, 2, position="rope_learned", causal=True)
    model(torch.randint(0, 20, (2, 6))).sum().backward()
    assert model.position.freqs.grad is not None and model.position.freqs.grad.abs().sum() > 0
    assert model.position_for_layer(1) is not model.position  # one set per block


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**5), st.integers(0, 10**5), st.integers(-50, 50))
def test_logit_depends_only_on_the_offset(i, j, delta):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 8, dtype=torch.float64, generator=g)
    freqs = torch.rand(1, 4, dtype=torch.float64, generator=g)

    def logit(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, 8)
        rq, rk = apply_rope_learned(both, torch.tensor([pq, pk], dtype=torch.float64), freqs)[0, 0]
        return float(rq @ rk)

    assert logit(i + delta, i) == pytest.approx(logit(j + delta, j), abs=1e-8)


def test_explicit_equals_implicit_and_partial_rotation():
    module = LearnedRope(8, heads=2, rotary_fraction=0.5, interleaved=True)
    x = torch.randn(2, 2, 5, 8)
    torch.testing.assert_close(module(x, offset=3), module(x, positions=torch.arange(3, 8)))
    torch.testing.assert_close(module(x)[..., 4:], x[..., 4:], rtol=0, atol=0)


def test_empty_sequence():
    assert apply_rope_learned(torch.zeros(1, 2, 0, 4), torch.zeros(0), torch.ones(2, 2)).shape == (1, 2, 0, 4)
    assert LearnedRope(4, heads=2)(torch.zeros(1, 2, 0, 4)).shape == (1, 2, 0, 4)


def test_meta_device_then_reset():
    module = LearnedRope(8, heads=2, device="meta")
    module.to_empty(device="cpu")
    module.reset_parameters()
    torch.testing.assert_close(LearnedRope(8, heads=2)(torch.ones(1, 2, 3, 8)), module(torch.ones(1, 2, 3, 8)))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: LearnedRope(7), "head_dim"),
        (lambda: LearnedRope(8, heads=0), "heads"),
        (lambda: LearnedRope(8, heads=2)(torch.randn(1, 3, 4, 8)), "x"),
        # grouped-query keys with per-head frequencies: the message used to read "(1 or 1, at most 4)"
        (lambda: LearnedRope(8, heads=2).rotate(torch.randn(1, 2, 4, 8), torch.randn(1, 1, 4, 8),
                                                q_positions=Positions(4), k_positions=Positions(4)), "`k` must have 2 heads"),
        (lambda: LearnedRope(8)(torch.randn(1, 1, 4, 8), positions=torch.arange(4).half()), "positions"),
        (lambda: apply_rope_learned(torch.randn(1, 2, 3, 4), torch.arange(3), torch.ones(3, 2)), "freqs"),
        (lambda: apply_rope_learned(torch.randn(1, 2, 3, 4), torch.arange(3), torch.ones(2, 3)), "freqs"),
        (lambda: apply_rope_learned(torch.randn(1, 2, 3, 4), torch.arange(4), torch.ones(2, 2)), "positions"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_compiles_with_dynamic_shapes():
    # the frequency rows were checked with `freqs.shape[0] not in (1, h)`, which dynamo evaluates as
    # False when h is symbolic and the parameter's static row count equals it: the call was refused
    rope = LearnedRope(8, heads=2)
    x = torch.randn(3, 2, 7, 8)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, p: rope(x, positions=p), fullgraph=True, dynamic=True, backend="eager")
    for n in (7, 5):
        torch.testing.assert_close(compiled(x[:, :, :n], torch.arange(3, 3 + n)), rope(x[:, :, :n], positions=torch.arange(3, 3 + n)))


def test_repr_shows_the_pair_layout():
    assert "interleaved=True" in repr(LearnedRope(8, heads=2, interleaved=True))
