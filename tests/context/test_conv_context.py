"""Convolutional context (Mohamed et al.): the convolution against a loop over taps, order
sensitivity, causality and incremental decoding."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.checks import check_one
from posenc.context import ConvContext
from posenc.functional import context_conv1d
from posenc.models import Transformer


def conv_loop(x, weight, bias, causal):
    """y[t] = bias + sum_s W[:, :, s] x[t + s - left], zeros outside the sequence (float64)."""
    b, n, _c = x.shape
    k = weight.shape[-1]
    left = k - 1 if causal else (k - 1) // 2
    y = torch.zeros(b, n, weight.shape[0], dtype=torch.float64)
    for t in range(n):
        y[:, t] = bias.double()
        for s in range(k):
            src = t + s - left
            if 0 <= src < n:
                y[:, t] += x[:, src].double() @ weight[:, :, s].double().T
    return y


def stack_loop(module: ConvContext, x):
    for conv, norm in zip(module.convs, module.norms):
        y = conv_loop(x, conv.weight, conv.bias, module.causal)
        mean, var = y.mean(-1, keepdim=True), y.var(-1, unbiased=False, keepdim=True)
        x = ((y - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()).clamp(min=0)
    return x


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_convolution_equals_loop(k, causal):
    x, w, b = torch.randn(2, 6, 3), torch.randn(5, 3, k), torch.randn(5)
    got = context_conv1d(x, w, b, causal=causal)
    torch.testing.assert_close(got.double(), conv_loop(x, w, b, causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_stack_equals_loop(causal):
    module = ConvContext(6, kernel_size=3, layers=2, causal=causal)
    x = torch.randn(2, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(module(x).double(), stack_loop(module, x), atol=1e-5, rtol=1e-5)


def test_without_encoding_permutation_equivariant_with_conv_context_not():
    tokens = torch.randint(0, 12, (2, 8))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    plain = Transformer(12, 16, 2, 2, position="none").eval()
    conv = Transformer(12, 16, 2, 2, position="conv_context").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens[:, perm]), plain(tokens)[:, perm], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(conv(tokens[:, perm]), conv(tokens)[:, perm], atol=1e-3)


def test_causal_outputs_never_depend_on_later_inputs():
    model = Transformer(12, 16, 2, 2, position="conv_context", causal=True, kernel_size=4).eval()
    tokens = torch.randint(0, 12, (2, 10))
    with torch.no_grad():
        base = model(tokens)
        for t in range(1, 10):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 1) % 12
            out = model(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=0, rtol=0)
            assert not torch.allclose(out[:, t], base[:, t])
    # and the module alone: the Jacobian of output t with respect to a later input is zero
    module = ConvContext(4, kernel_size=3, layers=2, causal=True)
    x = torch.randn(1, 6, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(module(x)[:, 2].sum(), x)
    assert grad[:, 3:].abs().max() == 0 and grad[:, :3].abs().max() > 0


def test_streaming_in_chunks_equals_one_call():
    module = ConvContext(4, kernel_size=4, layers=3, causal=True)
    x = torch.randn(2, 11, 4)
    with torch.no_grad():
        full = module(x)
        parts, start = [], 0
        for size in (3, 1, 1, 4, 2):
            parts.append(module(x[:, start : start + size], offset=start))
            start += size
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-6, rtol=1e-6)


def test_cached_decoding_equals_full_pass():
    result = check_one("conv_context")
    assert result.ok and "skipped" not in result.detail, result.detail


def test_each_cache_continues_its_own_sequence():
    # the convolution's last inputs belong to the cache: two caches decoded in turn, or a full pass
    # of another sequence between two steps, used to hand one sequence the other's inputs
    torch.manual_seed(0)
    model = Transformer(16, 8, 1, 2, position="conv_context", causal=True, kernel_size=3).eval()
    a, b = torch.randint(0, 16, (2, 1, 6))
    with torch.no_grad():
        full_a, full_b = model(a), model(b)
        cache_a, cache_b = model.new_cache(), model.new_cache()
        steps_a, steps_b = [], []
        for t in range(6):
            steps_a.append(model(a[:, t : t + 1], cache=cache_a))
            steps_b.append(model(b[:, t : t + 1], cache=cache_b))
        torch.testing.assert_close(torch.cat(steps_a, dim=1), full_a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat(steps_b, dim=1), full_b, atol=1e-5, rtol=1e-5)
        cache_a = model.new_cache()
        first = model(a[:, :3], cache=cache_a)
        model(b[:, :3])  # another sequence in between, without a cache
        rest = model(a[:, 3:], cache=cache_a)
        torch.testing.assert_close(torch.cat([first, rest], dim=1), full_a, atol=1e-5, rtol=1e-5)


def test_trains_without_a_position_encoding():
    # predicting each token's left neighbour is impossible for attention alone; the convolution sees it
    torch.manual_seed(0)
    model = Transformer(8, 32, 1, 2, position="conv_context")

    def batch():
        x = torch.randint(0, 8, (16, 10))
        return x, torch.roll(x, 1, dims=1)

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=60)
    assert_loss_falls(losses, factor=0.7)


def test_meta_device_state_dict_and_shape():
    module = ConvContext(8, kernel_size=5, layers=2, device="meta").to_empty(device="cpu")
    other = ConvContext(8, kernel_size=5, layers=2)
    other.load_state_dict(module.state_dict())
    assert other(torch.randn(3, 9, 8)).shape == (3, 9, 8)
    assert other.receptive_field() == 9


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size"):
        ConvContext(8, kernel_size=0)
    with pytest.raises(ValueError, match="layers"):
        ConvContext(8, layers=0)
    module = ConvContext(8, causal=True)
    with pytest.raises(ValueError, match="x"):
        module(torch.randn(1, 3, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="x"):
        module(torch.randn(1, 3, 6))
    module(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="positions"):
        module(torch.randn(1, 2, 8), offset=5)  # the previous call ended at 3
    with pytest.raises(ValueError, match="left_context"):
        context_conv1d(torch.randn(1, 3, 2), torch.randn(2, 2, 3), left_context=torch.randn(1, 1, 2), causal=True)
    # an empty sequence used to skip the checks: a weight on another device or a wrong left_context passed
    with pytest.raises(ValueError, match="weight"):
        context_conv1d(torch.randn(1, 0, 2), torch.randn(2, 2, 3, device="meta"))
    with pytest.raises(ValueError, match="left_context"):
        context_conv1d(torch.randn(1, 0, 2), torch.randn(2, 2, 3), left_context=torch.randn(1, 1, 2), causal=True)
    assert context_conv1d(torch.randn(1, 0, 2), torch.randn(2, 2, 3)).shape == (1, 0, 2)
