"""Learned ViT patch table: bicubic resampling against a float64 Keys-kernel reference, loading across grids."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import import_peer
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import resample_pos_embed
from posenc.vision import LearnedPatchPosition


def keys_weight(x: float, a: float = -0.75) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def cubic_1d(values: list[float], size: int) -> list[float]:
    """Keys cubic convolution, half-pixel centres, border samples repeated."""
    n = len(values)
    out = []
    for o in range(size):
        src = (o + 0.5) * n / size - 0.5
        i0 = math.floor(src)
        t = src - i0
        acc = 0.0
        for tap in range(-1, 3):
            idx = min(max(i0 + tap, 0), n - 1)
            acc += values[idx] * keys_weight(t - tap)
        out.append(acc)
    return out


def reference_resample(table: torch.Tensor, old, new, prefix: int) -> torch.Tensor:
    (h, w), (nh, nw) = old, new
    d = table.shape[-1]
    grid = table[0, prefix:].reshape(h, w, d)
    out = torch.zeros(nh, nw, d, dtype=torch.float64)
    for c in range(d):
        rows = [cubic_1d([float(grid[i, j, c]) for j in range(w)], nw) for i in range(h)]  # along the width
        for j in range(nw):
            col = cubic_1d([rows[i][j] for i in range(h)], nh)  # then along the height
            for i in range(nh):
                out[i, j, c] = col[i]
    return torch.cat([table[0, :prefix], out.reshape(nh * nw, d)]).unsqueeze(0)


@pytest.mark.parametrize("old, new, prefix", [((3, 3), (5, 4), 1), ((4, 2), (3, 5), 0), ((2, 3), (4, 6), 2)])
def test_matches_float64_bicubic_reference(old, new, prefix):
    table = torch.randn(1, prefix + old[0] * old[1], 3, dtype=torch.float64)
    out = resample_pos_embed(table, new, num_prefix_tokens=prefix, old_shape=old)
    assert out.shape == (1, prefix + new[0] * new[1], 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference_resample(table, old, new, prefix), rtol=1e-10, atol=1e-10)


def smooth_table(side: int, d: int = 6, prefix: int = 1) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    chans = [torch.sin(math.pi * (k + 1) * xs / 3 + ys * k / 2) for k in range(d)]
    patches = torch.stack(chans, -1).reshape(side * side, d)
    return torch.cat([torch.randn(prefix, d), patches]).unsqueeze(0)


def test_round_trip_14_to_16_and_back_is_close_to_identity():
    table = smooth_table(14)
    there = resample_pos_embed(table, (16, 16), num_prefix_tokens=1)
    back = resample_pos_embed(there, (14, 14), num_prefix_tokens=1)
    torch.testing.assert_close(back[:, 0], table[:, 0], rtol=0, atol=0)  # the class token is untouched
    err = (back - table).abs()
    assert err.max() < 4e-2 and err.mean() < 6e-3  # on values of amplitude 1
    # while a rough (white-noise) table does not survive the trip
    rough = torch.randn(1, 197, 6)
    trip = resample_pos_embed(resample_pos_embed(rough, (16, 16), num_prefix_tokens=1), (14, 14), num_prefix_tokens=1)
    assert (trip - rough).abs().mean() > 10 * err.mean()


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2))
def test_same_grid_is_the_identity_and_prefix_is_kept(h, w, prefix):
    table = torch.randn(1, prefix + h * w, 4)
    torch.testing.assert_close(resample_pos_embed(table, (h, w), num_prefix_tokens=prefix, old_shape=(h, w)), table)
    out = resample_pos_embed(table, (h + 1, w + 2), num_prefix_tokens=prefix, old_shape=(h, w))
    torch.testing.assert_close(out[:, :prefix], table[:, :prefix])


def test_zero_width_table_resamples_to_zero_width():
    # F.interpolate's own error ('Non-empty 4D data tensor expected') once escaped here
    out = resample_pos_embed(torch.empty(1, 1 + 16, 0), (5, 3), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 15, 0)


def test_constant_table_stays_constant():
    table = torch.full((1, 16, 2), 0.7)
    torch.testing.assert_close(resample_pos_embed(table, (7, 3)), torch.full((1, 21, 2), 0.7))


def test_encode_explicit_equals_implicit():
    enc = LearnedPatchPosition(4, (2, 3), num_prefix_tokens=1)
    x = torch.randn(2, 7, 4)
    torch.testing.assert_close(enc(x), enc(x, positions=torch.arange(7)))
    torch.testing.assert_close(enc(x) - x, enc.weight.expand(2, -1, -1))
    sub = enc(torch.zeros(1, 2, 4), positions=torch.tensor([0, 4]))
    torch.testing.assert_close(sub[0], enc.weight[0, [0, 4]])


def test_checkpoint_at_one_grid_loads_at_another():
    small = LearnedPatchPosition(4, (3, 3), num_prefix_tokens=1)
    big = LearnedPatchPosition(4, (4, 5), num_prefix_tokens=1)
    big.load_state_dict(small.state_dict())
    expected = resample_pos_embed(small.weight.detach(), (4, 5), num_prefix_tokens=1, old_shape=(3, 3))
    torch.testing.assert_close(big.weight.detach(), expected)
    # a table saved by other code, without the grid: taken as square
    other = LearnedPatchPosition(4, (2, 2), num_prefix_tokens=1)
    other.load_state_dict({"weight": small.weight.detach()})
    torch.testing.assert_close(other.weight.detach(), resample_pos_embed(small.weight.detach(), (2, 2), num_prefix_tokens=1))


def test_checkpoint_at_a_transposed_grid_of_as_many_patches_is_resampled():
    # (2, 6) and (6, 2) tables have one shape; the saved grid decides, not the shape
    wide = LearnedPatchPosition(4, (2, 6), num_prefix_tokens=1)
    tall = LearnedPatchPosition(4, (6, 2), num_prefix_tokens=1)
    tall.load_state_dict(wide.state_dict())
    expected = resample_pos_embed(wide.weight.detach(), (6, 2), num_prefix_tokens=1, old_shape=(2, 6))
    torch.testing.assert_close(tall.weight.detach(), expected)
    strict = LearnedPatchPosition(4, (6, 2), num_prefix_tokens=1, resize_on_load=False)
    with pytest.raises(ValueError, match=r"grid \(2, 6\).*resize_on_load=True"):
        strict.load_state_dict(wide.state_dict())


def test_resize_in_place():
    enc = LearnedPatchPosition(4, (3, 3))
    before = enc.weight.detach().clone()
    enc.resize((5, 5))
    assert enc.grid == (5, 5) and enc.weight.shape == (1, 25, 4)
    torch.testing.assert_close(enc.weight.detach(), resample_pos_embed(before, (5, 5)))
    with pytest.raises(ValueError, match="`grid`"):  # not resample_pos_embed's `new_shape`
        enc.resize((10**6, 10**6))
    assert enc.grid == (5, 5) and enc.weight.shape == (1, 25, 4)


def test_meta_device_and_state_dict_round_trip():
    meta = LearnedPatchPosition(4, (2, 2), device="meta")
    meta.to_empty(device="cpu")
    assert meta.weight.shape == (1, 4, 4)
    a, b = LearnedPatchPosition(4, (2, 2)), LearnedPatchPosition(4, (2, 2))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.weight, b.weight)


def test_registry_entry():
    info = get("vit_learned")
    assert info.family == "vision" and "2010.11929" in info.paper and info.cls is LearnedPatchPosition


def test_bad_input():
    with pytest.raises(ValueError, match="table"):
        resample_pos_embed(torch.randn(16, 4), (2, 2))
    with pytest.raises(ValueError, match="table"):
        resample_pos_embed(torch.randn(2, 16, 4), (2, 2))
    with pytest.raises(ValueError, match=r"new_shape\[0\]"):
        resample_pos_embed(torch.randn(1, 16, 4), (0, 2))
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        resample_pos_embed(torch.randn(1, 2, 4), (2, 2), num_prefix_tokens=2)
    with pytest.raises(ValueError, match="old_shape"):
        resample_pos_embed(torch.randn(1, 12, 4), (2, 2))  # 12 is not square
    with pytest.raises(ValueError, match="old_shape"):
        resample_pos_embed(torch.randn(1, 12, 4), (2, 2), old_shape=(3, 3))
    with pytest.raises(ValueError, match="grid"):
        LearnedPatchPosition(4, (0, 3))
    with pytest.raises(ValueError, match="positions"):
        LearnedPatchPosition(4, (2, 2))(torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="positions"):
        LearnedPatchPosition(4, (2, 2))(torch.zeros(1, 2, 4), positions=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="x"):
        LearnedPatchPosition(4, (2, 2))(torch.zeros(1, 4, 3))
    fixed = LearnedPatchPosition(4, (3, 3), resize_on_load=False)
    with pytest.raises(ValueError, match="resize_on_load"):
        fixed.load_state_dict(LearnedPatchPosition(4, (2, 2)).state_dict())


# -- parity with timm ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new, prefix", [((4, 4), (6, 6), 1), ((6, 6), (4, 4), 1), ((5, 3), (2, 7), 0), ((7, 7), (3, 3), 2)]
)
def test_matches_timm_resample_abs_pos_embed_without_antialiasing(old, new, prefix):
    """timm's ``resample_abs_pos_embed(..., antialias=False)`` (DeiT's bicubic resampling; timm interpolates
    in float32). timm's default ``antialias=True`` is another resampler (PIL's a = -0.5 cubic, widened
    when shrinking) and differs from both by O(0.1) on a random table, even when enlarging."""
    pos_embed = import_peer("timm.layers.pos_embed")
    torch.manual_seed(0)
    table = torch.randn(1, prefix + old[0] * old[1], 8, dtype=torch.float64)
    ours = resample_pos_embed(table, new, num_prefix_tokens=prefix, old_shape=old)
    theirs = pos_embed.resample_abs_pos_embed(table, list(new), list(old), num_prefix_tokens=prefix, antialias=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("grid", "size", "message"),
    [
        (torch.ones(1, 8, 3, 3, dtype=torch.long), (5, 5), "`grid` must be a floating-point tensor"),  # truncated silently
        (torch.randn(8, 3, 3), (5, 5), "`grid` must have rank 4"),
        (torch.randn(1, 8, 0, 3), (5, 5), "`grid` must have at least one row and column"),
        (torch.randn(1, 8, 3, 3), (0, 5), r"`size\[0\]` must be >= 1"),
        (torch.randn(1, 8, 3, 3), (5,), "`size` must be an int or an"),
        (torch.randn(1, 8, 3, 3), (10**6, 10**6), r"`size`=\(1000000, 1000000\) needs"),
    ],
)
def test_interpolate_grid_refuses_bad_input_by_name(grid, size, message):
    from posenc.vision import interpolate_grid

    # each used to fail inside F.interpolate (or the allocator) without naming the argument
    with pytest.raises(ValueError, match=message):
        interpolate_grid(grid, size)


# -- parity with transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("new", [(6, 6), (2, 3), (4, 7)])
def test_matches_transformers_vit_interpolate_pos_encoding(new):
    """transformers' ``ViTEmbeddings.interpolate_pos_encoding`` (DINO's bicubic resampling of the patch
    rows, the class token's row kept), in float64."""
    transformers = pytest.importorskip("transformers")
    vit = pytest.importorskip("transformers.models.vit.modeling_vit")
    config = transformers.ViTConfig(hidden_size=8, image_size=16, patch_size=4, num_channels=3)
    peer = vit.ViTEmbeddings(config).double()
    with torch.no_grad():
        peer.position_embeddings.copy_(torch.randn(1, 17, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    h, w = new
    want = peer.interpolate_pos_encoding(torch.zeros(1, 1 + h * w, 8, dtype=torch.float64), 4 * h, 4 * w)
    got = resample_pos_embed(peer.position_embeddings, new, num_prefix_tokens=1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_a_prefix_longer_than_the_table_is_refused_naming_num_prefix_tokens():
    """num_prefix_tokens=10**12 once gave '`new_shape`=(3, 3) needs ... 14.6 TiB' instead of saying the prefix
    leaves no patch rows."""
    with pytest.raises(ValueError, match="`num_prefix_tokens`=1000000000000 leaves no patch rows"):
        resample_pos_embed(torch.randn(1, 5, 4), (3, 3), num_prefix_tokens=10**12)


def test_checkpoint_of_another_width_is_refused_before_resampling():
    # the grid was resampled first, and torch then reported the resampled table's shape as the
    # checkpoint's ('copying a param with shape (1, 16, 4) from checkpoint'; it held (1, 9, 4))
    source, target = LearnedPatchPosition(4, grid=3), LearnedPatchPosition(8, grid=4)
    with pytest.raises(ValueError, match=r"shape \(1, 9, 4\).*dim=8"):
        target.load_state_dict(source.state_dict())


@pytest.mark.parametrize("rows", [16, 198])
def test_checkpoint_without_grid_and_another_prefix_count_is_refused_naming_the_rows(rows):
    # a timm table without the class token's row (16 = 4x4) or with a distillation token's (198 = 2 + 14x14),
    # loaded into a model with one prefix token, was refused naming `old_shape`, an argument of
    # resample_pos_embed that load_state_dict's caller never passed
    model = LearnedPatchPosition(8, grid=4, num_prefix_tokens=1)
    with pytest.raises(ValueError, match=f"checkpoint's position table has {rows} rows and no saved grid"):
        model.load_state_dict({"weight": torch.randn(1, rows, 8)})
