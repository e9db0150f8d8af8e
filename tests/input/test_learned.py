"""Learned absolute table: lookup, the max_len boundary, resizing and checkpoints across lengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posenc.functional import resize_table
from posenc.input import LearnedPositionEncoding


def test_adds_the_row_of_each_position():
    enc = LearnedPositionEncoding(6, max_len=10)
    x = torch.randn(2, 4, 6)
    table = enc.weight.detach().double().numpy()
    np.testing.assert_allclose(enc(x, offset=3).detach().double().numpy(), x.double().numpy() + table[3:7], atol=1e-6)


def test_explicit_equals_implicit_and_batched_positions():
    enc = LearnedPositionEncoding(6, max_len=10)
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(enc(x, offset=2), enc(x, positions=torch.arange(2, 6)))
    pos = torch.tensor([[0, 1, 2, 3], [6, 7, 8, 9]])
    out = enc(x, positions=pos)
    torch.testing.assert_close(out[1], x[1] + enc.weight[6:10])


def test_positions_past_the_table_raise():
    enc = LearnedPositionEncoding(4, max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        enc(torch.randn(1, 9, 4))
    with pytest.raises(ValueError, match="max_len=8"):
        enc(torch.randn(1, 2, 4), offset=7)
    with pytest.raises(ValueError, match=r"positions.*\[0, 7\]"):
        enc(torch.randn(1, 2, 4), positions=torch.tensor([3, 8]))
    with pytest.raises(ValueError, match="positions"):
        enc(torch.randn(1, 2, 4), positions=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="integers"):
        enc(torch.randn(1, 2, 4), positions=torch.tensor([0.5, 1.0]))


def test_resize_table_linear_keeps_end_points_and_lines():
    # a table linear in the position is reproduced exactly by linear resampling with aligned corners
    table = torch.linspace(0, 1, 5, dtype=torch.float64).unsqueeze(1).repeat(1, 3)
    out = resize_table(table, 9)
    np.testing.assert_allclose(out[:, 0].numpy(), np.linspace(0, 1, 9), atol=1e-12)
    assert resize_table(table, 5).data_ptr() != table.data_ptr()


def test_resize_table_of_float64_keeps_float64_precision():
    # the table was once resampled in float32: a random float64 table lost its end points at 1e-8
    table = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for mode in ("linear", "nearest"):
        out = resize_table(table, 9, mode=mode)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out[[0, -1]], table[[0, -1]], atol=0, rtol=0)
    out = resize_table(table, 9)
    torch.testing.assert_close(out[1::2], (table[:-1] + table[1:]) / 2, atol=1e-15, rtol=0)


def test_resize_table_of_zero_width():
    # F.interpolate's own error ('Non-empty 3D data tensor expected') once escaped here
    for mode in ("linear", "nearest"):
        assert resize_table(torch.empty(10, 0), 15, mode=mode).shape == (15, 0)


def test_checkpoint_loads_at_another_length_when_asked():
    small = LearnedPositionEncoding(4, max_len=8)
    with pytest.raises(ValueError, match="resize_on_load"):
        LearnedPositionEncoding(4, max_len=16).load_state_dict(small.state_dict())
    big = LearnedPositionEncoding(4, max_len=16, resize_on_load=True)
    big.load_state_dict(small.state_dict())
    torch.testing.assert_close(big.weight[0], small.weight[0])
    torch.testing.assert_close(big.weight[-1], small.weight[-1])
    resized = LearnedPositionEncoding(4, max_len=8).resize(12)
    assert resized.weight.shape == (12, 4) and resized.max_len == 12


def test_state_dict_round_trip_and_meta():
    enc = LearnedPositionEncoding(4, max_len=8)
    other = LearnedPositionEncoding(4, max_len=8)
    other.load_state_dict(enc.state_dict())
    torch.testing.assert_close(other.weight, enc.weight)
    meta = LearnedPositionEncoding(4, max_len=8, device="meta")
    assert meta.weight.is_meta
    meta.to_empty(device="cpu").reset_parameters()
    assert torch.isfinite(meta.weight).all()


@pytest.mark.parametrize("kwargs, match", [({"dim": 0}, "dim"), ({"dim": 4, "max_len": 0}, "max_len"), ({"dim": 4, "combine": "x"}, "combine")])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnedPositionEncoding(**kwargs)


def test_bad_resize_arguments():
    with pytest.raises(ValueError, match="new_len"):
        resize_table(torch.randn(4, 2), 0)
    with pytest.raises(ValueError, match="table"):
        resize_table(torch.randn(4), 3)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_narrow_integer_positions_index_the_table(dtype):
    # used to fail inside F.embedding ("Expected tensor for argument #1 'indices' to have one of the
    # following scalar types: Long, Int; but got torch.ByteTensor")
    enc = LearnedPositionEncoding(4, 8)
    x = torch.zeros(2, 3, 4)
    positions = torch.tensor([5, 0, 7])
    torch.testing.assert_close(enc(x, positions=positions.to(dtype)), enc(x, positions=positions))


def test_resize_table_nearest_keeps_end_points_and_the_linear_position_map():
    # nearest once read row floor(i L / new_len): shrinking rows 0..8 to 5 gave rows [0, 1, 3, 5, 7],
    # the last row lost, while linear reads the positions i (L - 1) / (new_len - 1) = [0, 2, 4, 6, 8]
    table = torch.arange(9, dtype=torch.float64).unsqueeze(1)
    for new_len in (5, 3, 2, 1, 9, 17):
        out = resize_table(table, new_len, mode="nearest")
        positions = torch.arange(new_len, dtype=torch.float64) * 8 / max(new_len - 1, 1)
        torch.testing.assert_close(out[:, 0], torch.floor(positions + 0.5), atol=0, rtol=0)
        if new_len > 1:
            assert out[0, 0] == 0 and out[-1, 0] == 8
    torch.testing.assert_close(resize_table(table, 5, mode="nearest"), resize_table(table, 5), atol=0, rtol=0)


def test_checkpoint_of_another_width_is_refused_before_resizing():
    # the table was interpolated along positions first, and torch then reported the resized table's
    # shape as the checkpoint's ('copying a param with shape (32, 4) from checkpoint'; it held (16, 4))
    source = LearnedPositionEncoding(4, max_len=16)
    target = LearnedPositionEncoding(8, max_len=32, resize_on_load=True)
    with pytest.raises(ValueError, match=r"shape \(16, 4\).*dim=8"):
        target.load_state_dict(source.state_dict())
