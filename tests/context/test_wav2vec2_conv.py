"""wav2vec 2.0's convolutional positional embedding against a loop over groups and taps."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.checks import check_one
from posenc.context import Wav2Vec2ConvPositionEmbedding
from posenc.functional import wav2vec2_conv_embedding
from posenc.models import Transformer


def reference(x, weight, bias, groups):
    """x + GELU(y), y[t, o] = bias[o] + sum over the group's inputs i and taps s of
    W[o, i, s] x[t + s - k // 2, i]; an even kernel keeps frames 0 .. n - 1 of the n + 1 (float64)."""
    b, n, c = x.shape
    k = weight.shape[-1]
    per = c // groups
    y = torch.zeros(b, n, c, dtype=torch.float64)
    for o in range(c):
        g = o // per
        for t in range(n):
            acc = torch.full((b,), float(bias[o]), dtype=torch.float64)
            for i in range(per):
                for s in range(k):
                    src = t + s - k // 2
                    if 0 <= src < n:
                        acc += float(weight[o, i, s]) * x[:, src, g * per + i].double()
            y[:, t, o] = acc
    gelu = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    return x.double() + gelu


@pytest.mark.parametrize("k", [1, 4, 5])
def test_equals_loop(k):
    x, w, b = torch.randn(2, 6, 4), torch.randn(4, 2, k), torch.randn(4)
    got = wav2vec2_conv_embedding(x, w, b, groups=2)
    torch.testing.assert_close(got.double(), reference(x, w, b, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 8, 9, 128])
def test_output_length_equals_input_length(k):
    module = Wav2Vec2ConvPositionEmbedding(16, kernel_size=k, groups=4)
    for n in (1, 5, 10):
        assert module(torch.randn(2, n, 16)).shape == (2, n, 16)


def test_weight_norm_along_the_kernel_axis_and_fairseq_init():
    module = Wav2Vec2ConvPositionEmbedding(32, kernel_size=8, groups=16)
    params = module.conv.parametrizations.weight
    assert params.original0.shape == (1, 1, 8)  # one gain per tap (dim=2, as fairseq)
    assert params.original1.shape == (32, 2, 8)
    norms = module.conv.weight.detach().norm(dim=(0, 1))
    torch.testing.assert_close(norms, params.original0.detach().flatten())
    assert torch.equal(module.conv.bias, torch.zeros(32))
    std = module.conv.parametrizations.weight.original1.std().item()
    assert 0.5 < std / math.sqrt(4 / (8 * 32)) < 1.5


def test_in_the_transformer_breaks_permutation_equivariance_and_is_bidirectional_only():
    torch.manual_seed(0)
    model = Transformer(12, 32, 1, 2, position="wav2vec2_conv", kernel_size=4).eval()
    tokens = torch.randint(0, 12, (2, 7))
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        assert not torch.allclose(model(tokens[:, perm]), model(tokens)[:, perm], atol=1e-3)
    with pytest.raises(ValueError, match="causal"):
        Transformer(12, 32, 1, 2, position="wav2vec2_conv", causal=True)
    checked = check_one("wav2vec2_conv")  # an encoder: checked without the cache comparison
    assert checked.ok and "encoder only" in checked.detail


def test_trains():
    torch.manual_seed(0)
    model = Transformer(8, 32, 1, 2, position="wav2vec2_conv", kernel_size=4, groups=4)

    def batch():
        x = torch.randint(0, 8, (16, 10))
        return x, torch.roll(x, 1, dims=1)

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=60)
    assert_loss_falls(losses, factor=0.7)


def test_meta_device_and_state_dict():
    module = Wav2Vec2ConvPositionEmbedding(16, kernel_size=6, groups=4, device="meta").to_empty(device="cpu")
    other = Wav2Vec2ConvPositionEmbedding(16, kernel_size=6, groups=4)
    other.load_state_dict(module.state_dict())
    for key, value in other.state_dict().items():
        assert torch.equal(value, module.state_dict()[key]) or value.isnan().any()


def test_bad_input():
    with pytest.raises(ValueError, match="groups"):
        Wav2Vec2ConvPositionEmbedding(30, groups=16)
    with pytest.raises(ValueError, match="groups"):
        Wav2Vec2ConvPositionEmbedding(32, groups=0)
    with pytest.raises(ValueError, match="kernel_size"):
        Wav2Vec2ConvPositionEmbedding(32, kernel_size=0)
    module = Wav2Vec2ConvPositionEmbedding(32, kernel_size=3)
    with pytest.raises(ValueError, match="x"):
        module(torch.randn(1, 4, 32, dtype=torch.complex64))
    with pytest.raises(ValueError, match="x"):
        module(torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match="groups"):
        wav2vec2_conv_embedding(torch.randn(1, 4, 6), torch.randn(6, 2, 3), groups=4)
    with pytest.raises(ValueError, match="weight"):
        wav2vec2_conv_embedding(torch.randn(1, 4, 6), torch.randn(6, 2, 3), groups=2)
