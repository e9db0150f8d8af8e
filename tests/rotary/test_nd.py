"""N-axis RoPE: float64 per-pair rotations, logits that depend on the difference vector only, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.functional import apply_rope, apply_rope_nd
from posenc.rotary import rope_nd_cos_sin


def reference_rope_nd(x: torch.Tensor, positions, axes_dim, bases, interleaved: bool) -> torch.Tensor:
    """x (b, h, n, d); positions: per token a list of k coordinates. Transcribed pair by pair."""
    out = x.clone()
    rot = sum(axes_dim)
    for t, p in enumerate(positions):
        freqs = []  # (axis coordinate, frequency) per pair, axis 0 first
        for a, (w, base) in enumerate(zip(axes_dim, bases)):
            freqs += [(p[a], base ** (-2 * i / w)) for i in range(w // 2)]
        for j, (coord, f) in enumerate(freqs):
            i0, i1 = (2 * j, 2 * j + 1) if interleaved else (j, j + rot // 2)
            c, s = math.cos(coord * f), math.sin(coord * f)
            a0, a1 = x[..., t, i0], x[..., t, i1]
            out[..., t, i0] = c * a0 - s * a1
            out[..., t, i1] = s * a0 + c * a1
    return out


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize(
    "axes_dim, base, d",
    [((4, 6, 6), 10000.0, 16), ((2, 4), (100.0, 10.0), 6), ((8,), 500.0, 8)],
)
def test_matches_float64_reference(axes_dim, base, d, interleaved):
    g = torch.Generator().manual_seed(0)
    k = len(axes_dim)
    x = torch.randn(2, 2, 5, d, dtype=torch.float64, generator=g)
    positions = torch.randn(5, k, dtype=torch.float64, generator=g) * 50  # fractional, negative, large
    bases = (base,) * k if isinstance(base, float) else base
    ref = reference_rope_nd(x, positions.tolist(), axes_dim, bases, interleaved)
    out = apply_rope_nd(x, positions, axes_dim=axes_dim, base=base, interleaved=interleaved)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_float32_exact_at_large_positions():
    x = torch.randn(1, 1, 3, 8, dtype=torch.float64)
    positions = torch.tensor([[1e6, 3.0], [7.0, 123456.0], [0.0, 0.0]], dtype=torch.float64)
    ref = reference_rope_nd(x, positions.tolist(), (4, 4), (10000.0, 10000.0), True)
    out = apply_rope_nd(x.float(), positions, axes_dim=(4, 4))
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-6)


def test_one_axis_is_rope():
    x = torch.randn(2, 3, 6, 8)
    pos = torch.arange(6)
    torch.testing.assert_close(
        apply_rope_nd(x, pos.unsqueeze(-1), axes_dim=(8,), interleaved=False), apply_rope(x, pos), rtol=0, atol=1e-6
    )


def test_batched_positions_and_pass_through():
    x = torch.randn(2, 1, 4, 10)
    pos = torch.randint(0, 9, (2, 4, 3))
    out = apply_rope_nd(x, pos, axes_dim=(2, 2, 4))
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], apply_rope_nd(x[i : i + 1], pos[i], axes_dim=(2, 2, 4)))
    torch.testing.assert_close(out[..., 8:], x[..., 8:], rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=3, max_size=3),
    st.lists(st.floats(-100, 100), min_size=3, max_size=3),
    st.lists(st.floats(-20, 20), min_size=3, max_size=3),
)
def test_logit_depends_only_on_the_difference(p1, p2, delta):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 12, dtype=torch.float64, generator=g)

    def logit(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, 12)
        rq, rk = apply_rope_nd(both, torch.tensor([pq, pk], dtype=torch.float64), axes_dim=(4, 4, 4))[0, 0]
        return float(rq @ rk)

    shift = lambda p: [a + b for a, b in zip(p, delta)]
    assert logit(shift(p1), p1) == pytest.approx(logit(shift(p2), p2), abs=1e-9)


def test_gradient():
    x = torch.randn(1, 1, 3, 8, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(3, 2, dtype=torch.float64)
    torch.autograd.gradcheck(lambda t: apply_rope_nd(t, pos, axes_dim=(4, 4)), (x,))


def test_empty_sequence():
    assert apply_rope_nd(torch.zeros(1, 2, 0, 8), torch.zeros(0, 2), axes_dim=(4, 4)).shape == (1, 2, 0, 8)


def test_compiles_fullgraph():
    x, pos = torch.randn(1, 2, 4, 8), torch.randn(4, 2)
    compiled = torch.compile(lambda a, p: apply_rope_nd(a, p, axes_dim=(4, 4)), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, pos), apply_rope_nd(x, pos, axes_dim=(4, 4)))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x, p: apply_rope_nd(x, p, axes_dim=(4, 3)), "axes_dim"),
        (lambda x, p: apply_rope_nd(x, p, axes_dim=(8, 4)), "axes_dim"),
        (lambda x, p: apply_rope_nd(x, p, axes_dim=4), "axes_dim"),
        (lambda x, p: apply_rope_nd(x, p, axes_dim=(4, 4), base=(1.0,)), "base"),
        (lambda x, p: apply_rope_nd(x, p[..., :1], axes_dim=(4, 4)), "positions"),
        (lambda x, p: apply_rope_nd(x, p[:2], axes_dim=(4, 4)), "positions"),
        (lambda x, p: apply_rope_nd(x, p.half(), axes_dim=(4, 4)), "positions"),
        (lambda x, p: apply_rope_nd(x, p.expand(3, -1, -1), axes_dim=(4, 4)), "positions"),
        (lambda x, p: apply_rope_nd(x, p * float("nan"), axes_dim=(4, 4)), "positions"),
        (lambda x, p: apply_rope_nd(x.long(), p, axes_dim=(4, 4)), "x"),
        (lambda x, p: apply_rope_nd(x[0], p, axes_dim=(4, 4)), "x"),
        (lambda x, p: apply_rope_nd(x, p, axes_dim=(4, 4), interleaved="no"), "interleaved"),
        (lambda x, p: apply_rope_nd(x, p, axes_dim=(4, 4), interleaved=0), "interleaved"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    x, p = torch.randn(2, 1, 3, 8), torch.randn(3, 2)
    with pytest.raises((ValueError, TypeError), match=name):
        call(x, p)


def test_video_grid_bf16_exact_at_large_positions():
    # (time, height, width) of a video's patches, the time axis at a large absolute offset
    t, h, w = torch.meshgrid(torch.arange(2) + 10**6, torch.arange(2), torch.arange(3), indexing="ij")
    pos = torch.stack([t, h, w], dim=-1).reshape(-1, 3)
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    ref = reference_rope_nd(x, pos.tolist(), (4, 4, 4), (10000.0,) * 3, True)
    out = apply_rope_nd(x.bfloat16(), pos, axes_dim=(4, 4, 4))
    bound = (x.bfloat16().double() - x).abs().max() * 2 + ref.abs().max() * 2**-8
    assert (out.double() - ref).abs().max() <= bound


@pytest.mark.parametrize("base", [torch.tensor(100.0), "100", object()])
def test_base_that_is_neither_a_number_nor_a_sequence_is_refused(base):
    x = torch.randn(1, 2, 5, 16)
    with pytest.raises(TypeError, match="`base` must be a number or a sequence"):
        apply_rope_nd(x, torch.zeros(5, 2), axes_dim=(8, 8), base=base)


# -- parity with diffusers (Flux, CogVideoX, Wan, HunyuanVideo, Hunyuan-DiT) and rotary-embedding-torch --------------------------------------------
def test_matches_diffusers_flux_pos_embed():
    """Flux's ``FluxPosEmbed`` cos/sin (float64 angles, held in float32) applied by diffusers'
    ``apply_rotary_emb`` (adjacent pairs), fractional ids and a pass-through tail included."""
    flux = pytest.importorskip("diffusers.models.transformers.transformer_flux")
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    axes, n = (4, 6, 6), 11
    ids = torch.stack([0.5 * torch.arange(n), torch.arange(n) % 3, torch.arange(n) // 3], dim=-1).double()
    x = torch.randn(2, 3, n, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cos, sin = flux.FluxPosEmbed(10000, list(axes))(ids)
    theirs = embeddings.apply_rotary_emb(x[..., :16], (cos.double(), sin.double()))
    torch.testing.assert_close(apply_rope_nd(x, ids, axes_dim=axes)[..., :16], theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_rope_nd(x, ids, axes_dim=axes)[..., 16:], x[..., 16:], rtol=0, atol=0)


def test_matches_diffusers_cogvideox_3d_rotary():
    """CogVideoX's ``get_3d_rotary_pos_embed`` (time d/4, height and width 3d/8 each, linspace grids)
    is ``apply_rope_nd`` at those (t, h, w) coordinates."""
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    d, (t, h, w) = 16, (2, 2, 3)
    cos, sin = embeddings.get_3d_rotary_pos_embed(d, ((0, 0), (h, w)), (h, w), t, use_real=True)
    axes = [torch.linspace(0, s * (s - 1) / s, s, dtype=torch.float64) for s in (t, h, w)]
    ids = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    x = torch.randn(1, 2, t * h * w, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theirs = embeddings.apply_rotary_emb(x, (cos.double(), sin.double()))
    torch.testing.assert_close(apply_rope_nd(x, ids, axes_dim=(d // 4, d // 8 * 3, d // 8 * 3)), theirs, rtol=0, atol=1e-6)


def _grid_ids(*sizes: int) -> torch.Tensor:
    """(prod(sizes), k) integer coordinates of a grid in raster order (the last axis fastest)."""
    return torch.stack(torch.meshgrid(*(torch.arange(s) for s in sizes), indexing="ij"), dim=-1).reshape(-1, len(sizes))


def test_matches_diffusers_wan_rotary():
    """Wan's ``WanRotaryPosEmbed``: (frame, row, column) axes of widths head - 4 (head // 6), 2 (head // 6),
    2 (head // 6) over the latent patch grid, adjacent pairs as its attention rotates them."""
    wan = pytest.importorskip("diffusers.models.transformers.transformer_wan")
    head, (f, h, w) = 24, (3, 3, 4)
    rope = wan.WanRotaryPosEmbed(head, (1, 2, 2), 64)
    cos, sin = rope(torch.zeros(1, 4, f, 2 * h, 2 * w))  # (1, f*h*w, 1, head)
    x = torch.randn(1, f * h * w, 2, head, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    c, s = cos[..., 0::2].double(), sin[..., 1::2].double()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    theirs = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)  # Wan's apply_rotary_emb
    ours = apply_rope_nd(x.transpose(1, 2), _grid_ids(f, h, w), axes_dim=(rope.t_dim, rope.h_dim, rope.w_dim))
    torch.testing.assert_close(ours.transpose(1, 2), theirs, rtol=0, atol=1e-6)


def test_matches_diffusers_hunyuan_video_rotary():
    """HunyuanVideo's ``HunyuanVideoRotaryPosEmbed`` (per-axis widths, base 256) applied by diffusers'
    ``apply_rotary_emb``: apply_rope_nd at the (t, h, w) grid with that base."""
    hunyuan = pytest.importorskip("diffusers.models.transformers.transformer_hunyuan_video")
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    axes, (t, h, w) = (4, 10, 10), (2, 3, 4)
    cos, sin = hunyuan.HunyuanVideoRotaryPosEmbed(1, 1, list(axes), theta=256.0)(torch.zeros(1, 1, t, h, w))
    x = torch.randn(1, 2, t * h * w, sum(axes), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    theirs = embeddings.apply_rotary_emb(x, (cos.double(), sin.double()))
    torch.testing.assert_close(apply_rope_nd(x, _grid_ids(t, h, w), axes_dim=axes, base=256.0), theirs, rtol=0, atol=1e-6)


def test_matches_diffusers_hunyuan_dit_2d_rotary():
    """Hunyuan-DiT's ``get_2d_rotary_pos_embed``: half the head per axis, the width coordinate first, on
    the grid ``linspace(0, size (s - 1) / s, s)`` of a crop."""
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    d, (h, w) = 16, (3, 4)
    cos, sin = embeddings.get_2d_rotary_pos_embed(d, ((0, 0), (h, w)), (h, w), use_real=True)
    rows, cols = torch.meshgrid(*(torch.linspace(0, s * (s - 1) / s, s, dtype=torch.float64) for s in (h, w)), indexing="ij")
    ids = torch.stack((cols, rows), dim=-1).reshape(-1, 2)
    x = torch.randn(1, 2, h * w, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    theirs = embeddings.apply_rotary_emb(x, (cos.double(), sin.double()))
    torch.testing.assert_close(apply_rope_nd(x, ids, axes_dim=(d // 2, d // 2)), theirs, rtol=0, atol=1e-6)


def test_matches_rotary_embedding_torch_axial_frequencies():
    """rotary-embedding-torch's ``get_axial_freqs`` (language frequencies per axis, concatenated in axis
    order) applied by its ``apply_rotary_emb``, with float64 frequencies: equal."""
    ret = pytest.importorskip("rotary_embedding_torch")
    peer = ret.RotaryEmbedding(dim=8, cache_if_possible=False)
    with torch.no_grad():
        peer.freqs.data = 10000.0 ** -(torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    x = torch.randn(1, 2, 3, 4, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    theirs = ret.apply_rotary_emb(peer.get_axial_freqs(3, 4), x).reshape(1, 2, 12, 20)
    ours = apply_rope_nd(x.reshape(1, 2, 12, 20), _grid_ids(3, 4), axes_dim=(8, 8))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, error", [(torch.int64, ValueError), ("float32", TypeError)])
def test_cos_sin_refuses_a_dtype_that_is_not_a_float_dtype(dtype, error):
    """int64 used to truncate the angles and the cosines to integers (cos of position 1 came back 1)."""
    with pytest.raises(error, match="dtype"):
        rope_nd_cos_sin(torch.tensor([[1.0, 2.0]]), axes_dim=(4, 4), dtype=dtype)
