"""HANet: float64 re-implementation of the block, shape for any height, row-only attention, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.models import CNN
from posenc.spatial import HANet, height_encoding, row_pool


def conv1d_loop(x, weight, bias):
    """x (c, L), weight (o, c, k), zero padding k//2."""
    o, c, k = weight.shape
    length = x.shape[1]
    out = torch.zeros(o, length, dtype=torch.float64)
    for m in range(o):
        for t in range(length):
            acc = float(bias[m]) if bias is not None else 0.0
            for ch in range(c):
                for tap in range(k):
                    s = t + tap - k // 2
                    if 0 <= s < length:
                        acc += float(weight[m, ch, tap]) * float(x[ch, s])
            out[m, t] = acc
    return out


def bn_eval(x, bn):
    return (x - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]


def reference_hanet(block: HANet, x_low, x_high):
    b, c, h_l, _w_l = x_low.shape
    rows, height = block.rows, x_high.shape[2]
    out = torch.empty_like(x_high)
    for n in range(b):
        z = torch.zeros(c, rows, dtype=torch.float64)
        for r in range(rows):  # adaptive average pooling bins, then the whole width
            start, end = (r * h_l) // rows, math.ceil((r + 1) * h_l / rows)
            z[:, r] = x_low[n, :, start:end, :].mean(dim=(1, 2))
        q = torch.relu(bn_eval(conv1d_loop(z, block.first[0].weight, None), block.first[1]))
        for m in range(block.mid):  # interleaved sinusoid of the row index, base 100
            for r in range(rows):
                angle = r / 100.0 ** (2 * (m // 2) / block.mid)
                q[m, r] += math.sin(angle) if m % 2 == 0 else math.cos(angle)
        mid = torch.relu(bn_eval(conv1d_loop(q, block.middle[0].weight, block.middle[0].bias), block.middle[1]))
        a = torch.sigmoid(conv1d_loop(mid, block.last.weight, block.last.bias))
        for o in range(height):  # linear interpolation, align_corners=False
            src = max((o + 0.5) * rows / height - 0.5, 0.0)
            i0 = min(math.floor(src), rows - 1)
            i1, lam = min(i0 + 1, rows - 1), src - i0
            out[n, :, o, :] = x_high[n, :, o, :] * ((1 - lam) * a[:, i0] + lam * a[:, i1])[:, None]
    return out


@pytest.mark.parametrize("h_low, h_high, rows", [(8, 16, 4), (7, 11, 3), (12, 5, 6)])
def test_matches_float64_reference(h_low, h_high, rows):
    block = HANet(6, 4, rows=rows, reduction=2).double()
    for bn in (block.first[1], block.middle[1]):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.2, 0.2)
    block.eval()
    x_low = torch.randn(2, 6, h_low, 5, dtype=torch.float64)
    x_high = torch.randn(2, 4, h_high, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x_low, x_high), reference_hanet(block, x_low, x_high), rtol=1e-6, atol=1e-6)


def test_a_float64_block_gets_the_float64_height_encoding():
    """The float32 table cast to float64 left the attention 3.7e-9 off; a float64 block is now exact."""
    torch.manual_seed(0)
    block = HANet(6, 4, rows=5, reduction=2).double().eval()
    x_low = torch.randn(2, 6, 10, 5, dtype=torch.float64)
    x_high = torch.randn(2, 4, 7, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x_low, x_high), reference_hanet(block, x_low, x_high), rtol=0, atol=1e-13)
    assert height_encoding(5, 4, dtype=torch.float64).dtype == torch.float64


def test_height_encoding_is_the_interleaved_sinusoid():
    enc = height_encoding(5, 4, base=100.0).double()
    for r in range(5):
        for m in range(4):
            angle = r / 100.0 ** (2 * (m // 2) / 4)
            assert float(enc[m, r]) == pytest.approx(math.sin(angle) if m % 2 == 0 else math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("height", [1, 5, 16, 23, 40])
def test_output_shape_equals_input_shape_for_any_height(height):
    block = HANet(8)
    x = torch.randn(2, 8, height, 7)
    assert block(x).shape == x.shape
    assert HANet(8, 4)(x, torch.randn(2, 4, height + 3, 9)).shape == (2, 4, height + 3, 9)


@given(st.integers(4, 20), st.integers(2, 9))
def test_attention_varies_with_the_row_not_the_column(height, width):
    torch.manual_seed(0)
    block = HANet(8, rows=8).eval()
    # a content-free input: any variation comes from the height encoding
    out = block(torch.ones(1, 8, height, width), torch.ones(1, 8, height, width))
    torch.testing.assert_close(out, out[..., :1].expand_as(out))  # same for every column
    assert (out[:, :, 1:, 0] - out[:, :, :-1, 0]).abs().max() > 1e-4  # differs between rows


def test_the_row_dependence_comes_from_the_height_encoding():
    # 1x1 convolutions only, so zero padding cannot leak the row: without the encoding, constant rows
    block = HANet(8, rows=8, layers=2, kernel_size=1).eval()
    x = torch.ones(1, 8, 12, 5)
    with_encoding = block(x)
    assert (with_encoding[:, :, 1:] - with_encoding[:, :, :-1]).abs().max() > 1e-4
    block.encoding.zero_()
    out = block(x)
    torch.testing.assert_close(out, out[:, :, :1, :1].expand_as(out))


def test_meta_device_and_state_dict():
    meta = HANet(8, device="meta")
    meta.to_empty(device="cpu")
    torch.testing.assert_close(meta.encoding, height_encoding(16, meta.mid))
    a, b = HANet(8).eval(), HANet(8).eval()
    assert "encoding" not in a.state_dict()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 10, 4)
    torch.testing.assert_close(a(x), b(x))


def test_row_pool_of_empty_maps():
    """An empty batch or no channels gives an empty result; pixels missing from a real map are refused by
    name (torch's adaptive pooling raised 'Expected input to have non-zero size')."""
    assert row_pool(torch.randn(0, 2, 4, 4), 3).shape == (0, 2, 3)
    assert row_pool(torch.randn(0, 2, 0, 4), 3).shape == (0, 2, 3)
    assert row_pool(torch.randn(2, 0, 4, 4), 3, pooling="max").shape == (2, 0, 3)
    for shape in ((1, 2, 0, 4), (1, 2, 4, 0)):
        with pytest.raises(ValueError, match="`x` must have pixels"):
            row_pool(torch.randn(*shape), 3)


def test_registry_entry():
    info = get("hanet")
    assert info.family == "spatial" and "2003.05128" in info.paper and info.cls is HANet


def test_bad_input():
    with pytest.raises(ValueError, match="in_channels"):
        HANet(0)
    with pytest.raises(ValueError, match="layers"):
        HANet(8, layers=4)
    with pytest.raises(ValueError, match="kernel_size"):
        HANet(8, kernel_size=2)
    with pytest.raises(ValueError, match="rows"):
        HANet(8, rows=0)
    with pytest.raises(ValueError, match="pooling"):
        HANet(8, pooling="median")
    with pytest.raises(ValueError, match="pooling"):  # any other word used to mean max pooling
        row_pool(torch.randn(1, 2, 4, 4), 2, pooling="min")
    for channels in (3, 0):  # named as the caller wrote it, not as the sinusoid inside calls it (`dim`)
        with pytest.raises(ValueError, match="`channels`"):
            height_encoding(4, channels)
    with pytest.raises(ValueError, match="x_low"):
        HANet(8)(torch.randn(1, 6, 4, 4), torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="x_high"):
        HANet(8)(torch.randn(1, 8, 4, 4), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match="x_high"):
        HANet(8)(torch.randn(8, 4, 4))


def test_trains_in_reference_cnn():
    # segmentation-like target that depends on the row: top third class 0, middle 1, bottom 2
    torch.manual_seed(0)
    labels = torch.div(torch.arange(12), 4, rounding_mode="floor").view(1, 12, 1).expand(8, 12, 8)
    model = CNN(3, 3, width=8, depth=1, position="hanet", rows=6, reduction=2)
    losses = train_losses(model, lambda: (torch.randn(8, 3, 12, 8), labels), F.cross_entropy, steps=40, lr=1e-2)
    assert_loss_falls(losses, factor=0.7)


def test_repr_shows_pooling_and_base():
    text = repr(HANet(4, 4, rows=4, pooling="max", base=10.0))
    assert "pooling='max'" in text and "base=10.0" in text
