"""RoPE-Mixed: float64 per-pair transcription, the paper's initialisation, offset-only logits,
prefix tokens untouched, the axial special case, gradients, and use through the ViT."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.functional import apply_rope_2d, apply_rope_mixed
from posenc.models import ViT
from posenc.vision import RopeMixed, grid_coords, rope_mixed_init


def reference(x: torch.Tensor, coords, fx, fy) -> torch.Tensor:
    """x (b, h, n, d); coords: (row, col) per token; fx, fy: (h, d/2) nested lists. Adjacent pairs."""
    out = x.clone()
    for head in range(x.shape[1]):
        for t, (row, col) in enumerate(coords):
            for j in range(x.shape[-1] // 2):
                angle = col * fx[head][j] + row * fy[head][j]
                c, s = math.cos(angle), math.sin(angle)
                a0, a1 = x[:, head, t, 2 * j], x[:, head, t, 2 * j + 1]
                out[:, head, t, 2 * j] = c * a0 - s * a1
                out[:, head, t, 2 * j + 1] = s * a0 + c * a1
    return out


def test_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 6, 8, dtype=torch.float64, generator=g)
    freqs = torch.randn(2, 2, 4, dtype=torch.float64, generator=g)
    coords = torch.tensor([[0, 0], [1, 2], [2.5, -1.0], [30, 7], [4, 4], [1e4, 3]], dtype=torch.float64)
    ref = reference(x, coords.tolist(), freqs[0].tolist(), freqs[1].tolist())
    torch.testing.assert_close(apply_rope_mixed(x, coords, freqs), ref, rtol=1e-9, atol=1e-9)


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    f = rope_mixed_init(16, 3, base=10.0).double()
    mag = torch.tensor([10.0 ** (-4 * t / 16) for t in range(4)], dtype=torch.float64)
    norms = f.pow(2).sum(0).sqrt()  # (heads, d/2): |(fx, fy)| per pair
    torch.testing.assert_close(norms, torch.cat([mag, mag]).expand(3, -1), rtol=1e-6, atol=0)
    # the two halves of a head are orthogonal directions
    dots = (f[:, :, :4] * f[:, :, 4:]).sum(0)
    torch.testing.assert_close(dots, torch.zeros(3, 4, dtype=torch.float64), rtol=0, atol=1e-7)


def test_axial_initialisation_is_rope_2d_with_its_frequencies():
    x = torch.randn(1, 2, 6, 8)
    coords = grid_coords((2, 3))
    freqs = rope_mixed_init(8, 2, base=10.0, rotate=False)
    # pairs 0..d/4-1 follow x with base^(-4t/d), pairs d/4.. follow y: rope_2d's layout and frequencies
    torch.testing.assert_close(apply_rope_mixed(x, coords, freqs), apply_rope_2d(x, coords, base=10.0), rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(-3, 3), st.integers(-3, 3))
def test_logit_depends_only_on_the_offset(r1, c1, r2, c2, dy, dx):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 8, dtype=torch.float64, generator=g)
    freqs = torch.randn(2, 1, 4, dtype=torch.float64, generator=g)

    def logit(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, 8)
        rq, rk = apply_rope_mixed(both, torch.tensor([pq, pk], dtype=torch.float64), freqs)[0, 0]
        return float(rq @ rk)

    assert logit((r1 + dy, c1 + dx), (r1, c1)) == pytest.approx(logit((r2 + dy, c2 + dx), (r2, c2)), abs=1e-9)


def test_module_prefix_tokens_and_explicit_positions():
    torch.manual_seed(0)
    module = RopeMixed(8, (2, 3), heads=2, num_prefix_tokens=1)
    x = torch.randn(2, 2, 7, 8)
    out = module(x)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[:, :, 1:], apply_rope_mixed(x[:, :, 1:], grid_coords((2, 3)), module.freqs.detach()))
    keep = torch.tensor([0, 2, 5])
    torch.testing.assert_close(module(x[:, :, keep], positions=keep), out[:, :, keep])


def test_frequency_gradient():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    coords = torch.tensor([[0.0, 1.0], [2.0, 0.5], [3.0, 3.0]], dtype=torch.float64)
    freqs = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda f: apply_rope_mixed(x, coords, f), (freqs,))


def test_vit_learns_per_block_frequencies():
    torch.manual_seed(0)
    model = ViT(8, 4, 3, dim=16, depth=2, heads=2, position="rope_mixed")
    assert model.position_for_layer(0).freqs.shape == (2, 2, 4)
    assert model.position_for_layer(1) is not model.position_for_layer(0)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(model.position_for_layer(i).freqs.grad.abs().sum() > 0 for i in range(2))
    state = model.state_dict()
    assert "position.freqs" in state and "layer_positions.0.freqs" in state


def test_empty_sequence():
    assert apply_rope_mixed(torch.zeros(1, 2, 0, 4), torch.zeros(0, 2), torch.ones(2, 2, 2)).shape == (1, 2, 0, 4)
    assert RopeMixed(4, 2, heads=2)(torch.zeros(1, 2, 0, 4)).shape == (1, 2, 0, 4)


def test_meta_device_then_reset():
    module = RopeMixed(8, 2, heads=2, device="meta")
    module.to_empty(device="cpu")
    module.reset_parameters()
    assert torch.isfinite(module(torch.ones(1, 2, 4, 8))).all()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: RopeMixed(6, 2), "head_dim"),
        (lambda: RopeMixed(8, 0), "grid"),
        (lambda: RopeMixed(8, 2, heads=2)(torch.randn(1, 3, 4, 8)), "x"),
        (lambda: RopeMixed(8, 2)(torch.randn(1, 1, 2, 8), positions=torch.tensor([0, 4])), "positions"),
        (lambda: apply_rope_mixed(torch.randn(1, 2, 3, 8), torch.zeros(3, 2), torch.ones(2, 3, 4)), "freqs"),
        (lambda: apply_rope_mixed(torch.randn(1, 2, 3, 8), torch.zeros(3, 3), torch.ones(2, 2, 4)), "coords"),
        (lambda: apply_rope_mixed(torch.randn(1, 2, 3, 8), torch.zeros(3, 2).half(), torch.ones(2, 2, 4)), "coords"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


@pytest.mark.parametrize("kwargs,name", [({"rotate": "no"}, "`rotate`"), ({"rotate": 0}, "`rotate`"),
                                         ({"generator": 0}, "`generator`")])
def test_init_checks_its_flag_and_generator(kwargs, name):
    # rotate was read by truthiness ('no' drew random directions) and a wrong generator failed inside torch.rand
    with pytest.raises(TypeError, match=name):
        rope_mixed_init(8, 2, **kwargs)


def test_apply_rope_mixed_compiles_with_dynamic_shapes():
    # the frequency rows were checked with `freqs.shape[1] not in (1, h)`, which dynamo evaluates as
    # False when the parameter's static head count equals a symbolic h: the valid call was refused
    freqs = RopeMixed(8, grid=3, heads=2).freqs
    coords = grid_coords((3, 3))
    torch._dynamo.reset()
    compiled = torch.compile(apply_rope_mixed, fullgraph=True, dynamic=True, backend="eager")
    for n in (9, 6):
        x = torch.randn(3, 2, n, 8, generator=torch.Generator().manual_seed(n))
        torch.testing.assert_close(compiled(x, coords[:n], freqs), apply_rope_mixed(x, coords[:n], freqs))


def test_init_refuses_a_flag_that_is_not_a_bool_and_a_bad_generator():
    # rotate="no" drew random directions (truthy); generator=0 failed inside torch.rand
    with pytest.raises(TypeError, match="`rotate` must be True or False, got str 'no'"):
        rope_mixed_init(8, 2, rotate="no")
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, got int"):
        rope_mixed_init(8, 2, generator=0)
