"""sdpa_attention against a float64 softmax reference, for what the other backends accept."""

import math

import pytest
import torch

from posenc.attention import MaskSpec, eager_attention, sdpa_attention


def reference(q, k, v, bias):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("shape", [(), (6,), (1, 6), (5, 1), (2, 1, 1, 6)])
@pytest.mark.parametrize("mask", [None, MaskSpec(causal=True)])
def test_a_bias_of_any_broadcastable_rank(shape, mask):
    # a bias of rank 0 or 1 broadcasts to (b, h, n, m) as one of rank 2 does; SDPA's own attn_mask does not
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5 if i == 0 else 6, 4, dtype=torch.float64, generator=g) for i in range(3))
    bias = torch.randn(shape, dtype=torch.float64, generator=g)
    got = sdpa_attention(q, k, v, bias=bias, mask=mask)
    torch.testing.assert_close(got, eager_attention(q, k, v, bias=bias, mask=mask))
    if mask is None:
        torch.testing.assert_close(got, reference(q, k, v, bias))
