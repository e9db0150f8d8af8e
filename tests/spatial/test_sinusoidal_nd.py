"""N-D sinusoidal tables and the sincos_2d encoding against a float64 per-axis loop."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_loss_falls, import_peer, train_losses
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.core.positions import Positions
from posenc.functional import sinusoidal, sinusoidal_nd
from posenc.models import CNN
from posenc.spatial import SinCos2d, sinusoidal_coords


def reference(shape, dim, base=10000.0):
    """Slow float64 formula: axis a owns channels [a*D, (a+1)*D), D = dim/k; sin block then cos block."""
    k = len(shape)
    d = dim // k
    out = torch.zeros(*shape, dim, dtype=torch.float64)
    for index in torch.cartesian_prod(*[torch.arange(s) for s in shape]).reshape(-1, k).tolist():
        for a, p in enumerate(index):
            for i in range(d // 2):
                angle = p / base ** (2 * i / d)
                out[(*index, a * d + i)] = math.sin(angle)
                out[(*index, a * d + d // 2 + i)] = math.cos(angle)
    return out


@pytest.mark.parametrize("shape, dim", [((4,), 6), ((3, 5), 8), ((2, 3), 12), ((2, 3, 4), 12), ((5, 2), 16)])
def test_matches_float64_reference(shape, dim):
    out = sinusoidal_nd(shape, dim, dtype=torch.float64)
    assert out.shape == (*shape, dim)
    torch.testing.assert_close(out, reference(shape, dim), rtol=0, atol=1e-12)
    assert sinusoidal_nd(shape, dim).dtype == torch.float32


def test_each_axis_is_the_1d_sinusoid_without_interleaving():
    out = sinusoidal_nd((3, 5), 8)
    torch.testing.assert_close(out[:, 2, :4], sinusoidal(3, 4, interleaved=False))
    torch.testing.assert_close(out[1, :, 4:], sinusoidal(5, 4, interleaved=False))


def test_base_is_used():
    torch.testing.assert_close(sinusoidal_nd((3, 4), 8, base=100.0, dtype=torch.float64), reference((3, 4), 8, 100.0))


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3))
def test_fractional_coordinates_agree_with_grid(h, w, quarter):
    dim = 4 * quarter
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).double()
    torch.testing.assert_close(sinusoidal_coords(coords, dim).float(), sinusoidal_nd((h, w), dim))


def test_fractional_coordinates_interpolate_smoothly():
    a = sinusoidal_coords(torch.tensor([[1.0, 2.0]], dtype=torch.float64), 8)
    b = sinusoidal_coords(torch.tensor([[1.001, 2.0]], dtype=torch.float64), 8)
    assert 0 < (a - b).abs().max() < 2e-3


def test_sincos2d_feature_map_add_and_concat():
    enc = SinCos2d(8)
    x = torch.randn(2, 8, 3, 5)
    torch.testing.assert_close(enc(x) - x, sinusoidal_nd((3, 5), 8).permute(2, 0, 1).expand(2, -1, -1, -1))
    cat = SinCos2d(8, combine="concat")
    out = cat(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 11, 4, 4) and cat.concat_channels == 8


def test_sincos2d_tokens_prefix_zero_and_explicit_equals_implicit():
    enc = SinCos2d(8, grid=(2, 3), num_prefix_tokens=1)
    x = torch.zeros(2, 7, 8)
    out = enc(x)
    assert (out[:, 0] == 0).all()
    torch.testing.assert_close(out[0, 1:], sinusoidal_nd((2, 3), 8).reshape(6, 8))
    explicit = enc(x, positions=torch.arange(7))
    torch.testing.assert_close(out, explicit)
    # a subset of tokens (class token, then patches 4 and 1)
    sub = enc(torch.zeros(1, 3, 8), positions=torch.tensor([0, 5, 2]))
    torch.testing.assert_close(sub[0], out[0, [0, 5, 2]])


def test_sincos2d_float64_inputs_get_the_float64_formula():
    """A float64 model's tokens and feature maps carry the exact encoding (the float32 table was off by 3e-8)."""
    enc = SinCos2d(8, grid=(3, 4), num_prefix_tokens=1)
    expected = reference((3, 4), 8).reshape(12, 8)
    tokens = enc(torch.zeros(1, 13, 8, dtype=torch.float64))
    assert tokens.dtype == torch.float64 and (tokens[0, 0] == 0).all()
    torch.testing.assert_close(tokens[0, 1:], expected, rtol=0, atol=1e-15)
    explicit = enc(torch.zeros(1, 3, 8, dtype=torch.float64), positions=torch.tensor([0, 5, 2]))
    torch.testing.assert_close(explicit[0], tokens[0, [0, 5, 2]], rtol=0, atol=1e-15)
    fmap = enc(torch.zeros(1, 8, 3, 4, dtype=torch.float64))
    torch.testing.assert_close(fmap[0].permute(1, 2, 0).reshape(12, 8), expected, rtol=0, atol=1e-15)


def test_meta_device_rebuilds_table():
    enc = SinCos2d(8, grid=(3, 3), device="meta")
    enc.to_empty(device="cpu")
    torch.testing.assert_close(enc.table, sinusoidal_nd((3, 3), 8).reshape(9, 8))
    assert enc.to(torch.bfloat16).table.dtype == torch.float32
    assert enc.state_dict() == {}  # a derived table is not saved


def test_registry_entry_and_trains_in_cnn():
    info = get("sincos_2d")
    assert info.family == "spatial" and "1706.03762" in info.paper
    torch.manual_seed(0)
    rows = torch.linspace(-1, 1, 8).view(1, 1, 8, 1).expand(8, 1, 8, 8)
    model = CNN(1, 1, width=8, depth=1, position="sincos_2d")
    losses = train_losses(model, lambda: (torch.randn(8, 1, 8, 8) * 0.1, rows), torch.nn.functional.mse_loss, steps=40, lr=1e-2)
    assert_loss_falls(losses, factor=0.5)


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_nd((3, 4), 6)  # not divisible by 2 * 2
    with pytest.raises(ValueError, match="shape"):
        sinusoidal_nd((), 4)
    with pytest.raises(ValueError, match=r"shape\[1\]"):
        sinusoidal_nd((3, -1), 4)
    assert sinusoidal_nd((3, 0), 4).shape == (3, 0, 4)  # an empty grid gives an empty table
    with pytest.raises(ValueError, match="`dtype`"):
        sinusoidal_nd((3, 4), 4, dtype=torch.int64)  # would be a table of 0 and +-1
    with pytest.raises(ValueError, match="dim"):
        SinCos2d(6)
    with pytest.raises(ValueError, match="grid"):
        SinCos2d(8, grid=(0, 3))
    with pytest.raises(ValueError, match="x"):
        SinCos2d(8)(torch.randn(2, 4, 3, 3))  # channels do not match dim
    with pytest.raises(ValueError, match="x"):
        SinCos2d(8)(torch.randn(3, 3))
    with pytest.raises(ValueError, match="grid"):
        SinCos2d(8).encode(Positions(4))
    with pytest.raises(ValueError, match="positions"):
        SinCos2d(8, grid=(2, 2))(torch.zeros(1, 5, 8))  # more tokens than the grid holds


# -- parity with timm ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, dim", [((3, 5), 16), ((4, 4), 32), ((1, 6), 8)])
def test_matches_timm_build_sincos2d_pos_embed_up_to_channel_order(shape, dim):
    """timm's table has the same frequencies, ``10000^(-i / (dim/4))``, with the channels grouped
    ``[sin rows, sin columns, cos rows, cos columns]``; ours is ``[sin rows, cos rows, sin columns,
    cos columns]``. timm forms the angles in float32."""
    sincos = import_peer("timm.layers.pos_embed_sincos")
    quarter = dim // 4
    block = [torch.arange(b * quarter, (b + 1) * quarter) for b in range(4)]
    order = torch.cat([block[0], block[2], block[1], block[3]])  # ours -> timm's channel order
    ours = sinusoidal_nd(shape, dim, dtype=torch.float64).reshape(-1, dim)[:, order]
    theirs = sincos.build_sincos2d_pos_embed(list(shape), dim, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# -- parity with diffusers (MAE's get_2d_sincos_pos_embed) ---------------------------------------------------
@pytest.mark.parametrize("shape, dim", [((3, 5), 16), ((4, 4), 32), ((1, 6), 8)])
def test_matches_diffusers_mae_layout_with_the_width_coordinate_first(shape, dim):
    """diffusers' ``get_2d_sincos_pos_embed_from_grid`` is MAE's: sines then cosines per axis, the
    column (width) coordinate in the first half. ``sinusoidal_coords`` of ``(x, y)`` is that table;
    ``sinusoidal_nd`` of ``(h, w)`` has its halves swapped (rows first)."""
    embeddings = import_peer("diffusers.models.embeddings")
    h, w = shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack(torch.meshgrid(cols[0], rows[:, 0], indexing="xy"))  # MAE's meshgrid(grid_w, grid_h)
    theirs = embeddings.get_2d_sincos_pos_embed_from_grid(dim, grid.reshape(2, -1)).double()
    ours = sinusoidal_coords(torch.stack([cols, rows], dim=-1), dim).reshape(-1, dim)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    table = sinusoidal_nd(shape, dim, dtype=torch.float64).reshape(-1, dim)
    torch.testing.assert_close(torch.cat([table[:, dim // 2 :], table[:, : dim // 2]], dim=-1), theirs, rtol=0, atol=1e-12)


def test_a_width_no_memory_holds_is_refused_naming_dim():
    """sinusoidal_nd((2, 3), 10**12 * 4) once blamed `shape`=(2, 3) for the memory its width needs."""
    with pytest.raises(ValueError, match=r"`dim`=4000000000000 needs"):
        sinusoidal_nd((2, 3), 4 * 10**12)
    with pytest.raises(ValueError, match=r"`shape`=\(1000000, 1000000, 1000000\) needs"):
        sinusoidal_nd((10**6, 10**6, 10**6), 6)


def test_float64_tokens_and_maps_get_a_float64_encoding():
    # the float32 table left a float64 ViT or CNN 3e-8 from the formula
    enc = SinCos2d(8, grid=(3, 4), num_prefix_tokens=1).double()
    want = reference((3, 4), 8)
    zeros = torch.zeros(1, 13, 8, dtype=torch.float64)
    for positions in (None, torch.arange(13)):
        got = enc(zeros, positions=positions)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got[0, 1:], want.flatten(0, 1), atol=1e-13, rtol=0)
        assert not got[0, 0].any()
    got = enc(torch.zeros(1, 8, 3, 4, dtype=torch.float64))
    torch.testing.assert_close(got[0].permute(1, 2, 0), want, atol=1e-13, rtol=0)


def test_feature_map_encoding_compiles_for_dynamic_map_sizes():
    # the memory check's max(sizes, key=...) could not be traced for symbolic sizes, so a CNN with
    # position="sincos_2d" failed under torch.compile(dynamic=True, fullgraph=True)
    torch._dynamo.reset()
    enc = SinCos2d(8)
    compiled = torch.compile(enc, dynamic=True, fullgraph=True)
    for h, w in ((3, 5), (4, 6)):
        x = torch.randn(1, 8, h, w)
        torch.testing.assert_close(compiled(x), enc(x))


def test_repr_shows_the_base():
    assert "base=100.0" in repr(SinCos2d(8, grid=(3, 3), base=100.0))
