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


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("documents", [False, True])
def test_rows_that_see_no_key_match_the_eager_reference_in_every_gradient(with_bias, documents):
    # a padded query under a causal mask whose keys are all padding: uniform weights, no gradient to q
    # or k, as eager; SDPA's kernels once gave such rows' q, k and v gradients their own way (off by 0.8)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=gen).requires_grad_() for _ in range(3))
    bias = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=gen).requires_grad_() if with_bias else None
    key_mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    docs = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]) if documents else None
    mask = MaskSpec(causal=True, key_mask=key_mask, q_docs=docs, k_docs=docs)
    grad = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=gen)  # every row, the blind ones too
    leaves = [t for t in (q, k, v, bias) if t is not None]
    results = []
    for attention in (eager_attention, sdpa_attention):
        out = attention(q, k, v, bias=bias, mask=mask)
        results.append((out, *torch.autograd.grad(out, leaves, grad)))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
