"""Swin-style 2-D relative position bias: per-pair float64 reference, offset-only property, grids."""

from __future__ import annotations

import pytest
import torch
from helpers import import_peer
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.core.positions import Positions
from posenc.functional import relative_position_index_2d
from posenc.vision import RelativeBias2d, resample_bias_table


def reference_bias(table: torch.Tensor, grid, prefix: int) -> torch.Tensor:
    h, w = grid
    heads = table.shape[1]
    n = prefix + h * w
    out = torch.zeros(heads, n, n, dtype=torch.float64)
    for i in range(h * w):
        for j in range(h * w):
            yi, xi = divmod(i, w)
            yj, xj = divmod(j, w)
            entry = (yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1)
            out[:, prefix + i, prefix + j] = table[entry]
    return out.unsqueeze(0)


@pytest.mark.parametrize("grid, prefix", [((2, 3), 0), ((3, 3), 1), ((4, 2), 2)])
def test_matches_float64_reference(grid, prefix):
    enc = RelativeBias2d(3, grid, num_prefix_tokens=prefix, dtype=torch.float64)
    torch.nn.init.normal_(enc.table)
    torch.testing.assert_close(enc(), reference_bias(enc.table.detach(), grid, prefix), rtol=0, atol=0)


@given(st.integers(1, 4), st.integers(1, 4))
def test_bias_depends_only_on_the_offset(h, w):
    enc = RelativeBias2d(2, (h, w))
    torch.nn.init.normal_(enc.table)
    bias = enc()[0]
    seen: dict[tuple[int, int], torch.Tensor] = {}
    for i in range(h * w):
        for j in range(h * w):
            offset = (i // w - j // w, i % w - j % w)
            if offset in seen:
                torch.testing.assert_close(bias[:, i, j], seen[offset])
            seen[offset] = bias[:, i, j]
    assert len(seen) == (2 * h - 1) * (2 * w - 1)  # every table entry is some offset
    assert relative_position_index_2d((h, w)).unique().numel() == (2 * h - 1) * (2 * w - 1)


def test_swin_index_for_a_2x2_window():
    # Swin's relative_position_index for a 2x2 window, written out by hand
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    torch.testing.assert_close(relative_position_index_2d(2), expected)


def test_explicit_equals_implicit_and_subsets():
    enc = RelativeBias2d(2, (2, 3), num_prefix_tokens=1)
    torch.nn.init.normal_(enc.table)
    full = enc()
    torch.testing.assert_close(enc(positions=torch.arange(7)), full)
    keep = torch.tensor([0, 2, 5, 6])
    torch.testing.assert_close(enc(positions=keep), full[:, :, keep][:, :, :, keep])
    q = Positions(2, explicit=torch.tensor([[1, 3]]))
    k = Positions(3, explicit=torch.tensor([[0, 4, 6]]))
    torch.testing.assert_close(enc.score_bias(None, None, q_positions=q, k_positions=k), full[:, :, [1, 3]][:, :, :, [0, 4, 6]])


def test_meta_device_rebuilds_index():
    enc = RelativeBias2d(2, (3, 2), device="meta")
    enc.to_empty(device="cpu")
    torch.testing.assert_close(enc.index, relative_position_index_2d((3, 2)))
    assert "index" not in enc.state_dict()


def test_state_dict_round_trip_and_load_at_another_grid():
    a, b = RelativeBias2d(2, (3, 3)), RelativeBias2d(2, (3, 3))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(), b())
    big = RelativeBias2d(2, (4, 4))
    big.load_state_dict(a.state_dict())
    torch.testing.assert_close(big.table.detach(), resample_bias_table(a.table.detach(), (3, 3), (4, 4)))
    # resampling keeps the centre (offset 0) of a table that is smooth in the offset
    smooth = RelativeBias2d(1, (3, 3))
    with torch.no_grad():
        dy, dx = torch.meshgrid(torch.arange(-2, 3.0), torch.arange(-2, 3.0), indexing="ij")
        smooth.table.copy_((-(dy**2 + dx**2) / 8).reshape(25, 1))
    out = resample_bias_table(smooth.table.detach(), (3, 3), (5, 5)).reshape(9, 9)
    assert out[4, 4] == out.max()


def test_checkpoint_at_a_transposed_grid_of_as_many_offsets_is_resampled():
    # (2, 6) and (6, 2) tables both have 3 * 11 rows; the saved grid decides, not the shape
    wide, tall = RelativeBias2d(2, (2, 6)), RelativeBias2d(2, (6, 2))
    tall.load_state_dict(wide.state_dict())
    torch.testing.assert_close(tall.table.detach(), resample_bias_table(wide.table.detach(), (2, 6), (6, 2)))
    strict = RelativeBias2d(2, (6, 2), resize_on_load=False)
    with pytest.raises(ValueError, match=r"grid \(2, 6\).*resize_on_load=True"):
        strict.load_state_dict(wide.state_dict())


def test_init_std_zero_starts_from_a_zero_table():
    # init_std is checked as >= 0, but 0 failed inside trunc_normal_ with a bare ZeroDivisionError
    rb = RelativeBias2d(2, (3, 2), init_std=0.0)
    assert torch.equal(rb.table, torch.zeros_like(rb.table))
    assert torch.equal(rb(), torch.zeros(1, 2, 6, 6))


def test_registry_entry():
    info = get("rel_bias_2d")
    assert info.family == "vision" and "2103.14030" in info.paper and info.cls is RelativeBias2d
    assert RelativeBias2d.per_layer and "bias" in RelativeBias2d.hooks


def test_bad_input():
    with pytest.raises(ValueError, match="heads"):
        RelativeBias2d(0, (2, 2))
    with pytest.raises(ValueError, match="grid"):
        RelativeBias2d(2, (2, -1))
    with pytest.raises(ValueError, match="positions"):
        RelativeBias2d(2, (2, 2))(positions=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="positions"):
        RelativeBias2d(2, (2, 2))(5)
    with pytest.raises(ValueError, match="table"):
        resample_bias_table(torch.randn(8, 2), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="`table` must be a floating-point tensor"):  # not `grid`, an inner name
        resample_bias_table(torch.ones(9, 2, dtype=torch.long), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="`new_grid`"):  # not `size`, interpolate_grid's own name
        resample_bias_table(torch.randn(9, 2), (2, 2), (10**6, 10**6))
    strict = RelativeBias2d(2, (3, 3), resize_on_load=False)
    with pytest.raises(ValueError, match="resize_on_load"):
        strict.load_state_dict(RelativeBias2d(2, (2, 2)).state_dict())


# -- parity with timm ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 4), (2, 1)])
def test_matches_timm_swin_window_attention(grid):
    """timm's Swin ``WindowAttention``: the same table gathered by the same index gives the same bias."""
    swin = import_peer("timm.models.swin_transformer")
    torch.manual_seed(0)
    peer = swin.WindowAttention(dim=12, num_heads=3, window_size=grid).double()
    ours = RelativeBias2d(3, grid).double()
    with torch.no_grad():
        ours.table.copy_(peer.relative_position_bias_table)
    assert torch.equal(ours.index, peer.relative_position_index)
    assert torch.equal(ours(), peer._get_rel_pos_bias())


# -- parity with transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 4), (2, 1)])
def test_matches_transformers_swin_relative_position_bias(grid):
    """transformers' Swin ``SwinRelativePositionBias``: the same table gathered by the same index."""
    swin = pytest.importorskip("transformers.models.swin.modeling_swin")
    torch.manual_seed(0)
    peer = swin.SwinRelativePositionBias(3, grid).double()
    ours = RelativeBias2d(3, grid).double()
    with torch.no_grad():
        peer.relative_position_bias_table.normal_()
        ours.table.copy_(peer.relative_position_bias_table)
    assert torch.equal(ours.index.reshape(-1), peer.relative_position_index)
    assert torch.equal(ours(), peer())


@pytest.mark.parametrize("resize_on_load", [True, False])
def test_checkpoint_with_other_heads_is_refused_naming_heads(resize_on_load):
    # the grid was resampled first (or resize_on_load=True was asked for, which would not help), and
    # torch then reported the resampled table's shape as the checkpoint's
    source = RelativeBias2d(3, grid=3)
    target = RelativeBias2d(2, grid=4, resize_on_load=resize_on_load)
    with pytest.raises(ValueError, match=r"shape \(25, 3\).*heads=2"):
        target.load_state_dict(source.state_dict())


def test_blocked_kernel_refuses_a_bias_of_more_heads_and_shares_a_single_head():
    # the score_mod read table[b, h, ...] by the kernel's head: a 3-head bias on 2-head queries ran
    # with its first two heads without a word, and a 1-head bias failed with an IndexError
    from posenc.attention import attend

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=gen) for _ in range(3))
    pos = {"q_positions": Positions(4), "k_positions": Positions(4)}
    with pytest.raises(ValueError, match="`q` has 2 heads but the bias was built for heads=3"):
        attend(q, k, v, position=RelativeBias2d(3, (2, 2)), backend="blocked", **pos)
    shared = RelativeBias2d(1, (2, 2))
    torch.testing.assert_close(
        attend(q, k, v, position=shared, backend="blocked", **pos), attend(q, k, v, position=shared, backend="eager", **pos)
    )


def test_relative_index_2d_checks_its_coordinates():
    from posenc.vision import relative_index_2d

    origin = torch.tensor([[0, 0]])
    # a column past a (2, 2) grid gave index 5 (offset (1, -1)'s row) for the pair ((0, 2), (0, 0)),
    # a row past it an index past the 9-row table, and float coordinates a float index
    with pytest.raises(ValueError, match=r"`coords_q` must lie in the grid \(2, 2\)"):
        relative_index_2d(torch.tensor([[0, 2]]), origin, (2, 2))
    with pytest.raises(ValueError, match="`coords_k` must lie in the grid"):
        relative_index_2d(origin, torch.tensor([[-1, 0]]), (2, 2))
    with pytest.raises(ValueError, match="`coords_q` must be an integer tensor of shape"):
        relative_index_2d(torch.tensor([[0.5, 0.0]]), origin, (2, 2))
    with pytest.raises(ValueError, match=r"`grid\[0\]` must be >= 1"):
        relative_index_2d(origin, origin, (0, 2))
    torch.testing.assert_close(
        relative_index_2d(torch.tensor([[1, 1]]), torch.tensor([[0, 0]]), (2, 2)), torch.tensor([[8]])
    )
