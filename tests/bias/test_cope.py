"""CoPE against a float64 double loop of eq. 3-5: gate sums as positions, interpolated embeddings."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.bias import ContextualPosition, contextual_positions
from posenc.core.positions import Positions


def test_matches_a_double_loop():
    torch.manual_seed(0)
    module = ContextualPosition(4, 2, max_positions=5).double()
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    bias = module(q, k)
    e = module.embeddings.detach()
    for h in range(2):
        for i in range(3):
            qi = i + 2  # queries are the last 3 of 5 keys
            for j in range(qi + 1):
                gates = [1 / (1 + math.exp(-float(q[0, h, i] @ k[0, h, t]) / 2)) for t in range(j, qi + 1)]
                p = min(sum(gates), 4.0)
                lo, hi = math.floor(p), math.ceil(p)
                emb = e[:, lo] + (p - lo) * (e[:, hi] - e[:, lo])
                assert bias[0, h, i, j].item() == pytest.approx(float(q[0, h, i] @ emb), abs=1e-6)


def test_positions_count_gates_and_are_capped():
    q = torch.zeros(1, 1, 4, 2)
    k = torch.zeros(1, 1, 4, 2)  # every gate is sigmoid(0) = 1/2
    p = contextual_positions(q, k, max_positions=100)
    expected = 0.5 * (torch.arange(4)[:, None] - torch.arange(4)[None, :] + 1).clamp(min=0).float()
    torch.testing.assert_close(p[0, 0], expected)
    assert contextual_positions(q, k, max_positions=2).max() == 1


def test_gradients_reach_the_embeddings():
    module = ContextualPosition(4, 2, max_positions=6)
    q = torch.randn(1, 2, 5, 4, requires_grad=True)
    module(q, torch.randn(1, 2, 5, 4)).sum().backward()
    assert module.embeddings.grad.abs().sum() > 0 and q.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="`k`"):
        ContextualPosition(4, 2)(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 5))
    with pytest.raises(ValueError, match="max_positions"):
        ContextualPosition(4, 2, max_positions=1)
    with pytest.raises(ValueError, match="keys must include the queries"):
        contextual_positions(torch.randn(1, 1, 4, 2), torch.randn(1, 1, 3, 2), max_positions=4)


def test_interpolation_refuses_logits_without_positions():
    # logits of zero positions were refused as "`positions` must lie in [0, -1]", blaming the positions
    from posenc.bias.cope import interpolate_position_logits

    with pytest.raises(ValueError, match=r"`logits` must hold at least one position .* got shape \(1, 2, 3, 0\)"):
        interpolate_position_logits(torch.randn(1, 2, 3, 0), torch.zeros(1, 2, 3, 5))


def test_encoder_form_counts_gates_between_the_tokens_either_way():
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 5, 3, dtype=torch.float64), torch.randn(1, 1, 5, 3, dtype=torch.float64)
    p = contextual_positions(q, k, max_positions=100, causal=False)
    gates = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(3))[0, 0]
    for i in range(5):
        for j in range(5):
            lo, hi = min(i, j), max(i, j)
            assert p[0, 0, i, j].item() == pytest.approx(gates[i, lo : hi + 1].sum().item(), abs=1e-5)


def test_matches_x_transformers():
    """x-transformers' CoPE (the paper's appendix B code) on the causally masked logits ``q k^T / sqrt(d)``."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    torch.manual_seed(0)
    d, heads, npos, n, m = 8, 3, 6, 4, 7
    q = torch.randn(2, heads, n, d, dtype=torch.float64)
    k = torch.randn(2, heads, m, d, dtype=torch.float64)
    theirs = xt.CoPE(d, heads, npos).double()
    torch.nn.init.normal_(theirs.pos_emb)  # (npos, d); starts at zero in their code
    ours = ContextualPosition(d, heads, max_positions=npos).double()
    with torch.no_grad():
        ours.embeddings.copy_(theirs.pos_emb.t())
    visible = torch.ones(n, m, dtype=torch.bool).tril(m - n)
    logits = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~visible, -torch.finfo(torch.float64).max)
    want = theirs(q, logits)
    got = ours(q, k)  # computed in float32
    torch.testing.assert_close(got[..., visible].double(), want[..., visible], rtol=0, atol=2e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_a_float64_model_attends_in_float64(causal):
    """Gates and position logits were formed from q.float() and the embeddings' float32 copy, so a
    float64 model's bias carried float32 rounding (gradcheck failed); float64 inputs now stay float64."""
    torch.manual_seed(0)
    assert_float64_attention_is_exact(ContextualPosition(4, 2, max_positions=8, causal=causal), Positions(6), causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_and_half_models_keep_float32_biases(dtype):
    assert_float32_biases(ContextualPosition(4, 2, max_positions=8), Positions(6), dtype)


def test_positions_too_large_to_build_raise_with_their_size(monkeypatch):
    # the (b, h, n, m) gates and positions used to reach the allocator (28.8 GB for 8 heads and
    # 30,000 tokens) with no check; the limit is lowered here so that the test allocates nothing large
    monkeypatch.setattr("posenc.core.memory.MAX_TABLE_BYTES", 2**19)
    cope = ContextualPosition(4, 2, max_positions=8)
    q = torch.randn(1, 2, 300, 4)
    assert cope(q[:, :, :200], q[:, :, :200]).shape == (1, 2, 200, 200)  # 320 KB
    with pytest.raises(ValueError, match=r"CoPE positions \(batch=1, heads=2, n=300, m=300\) would need 703\.1 KiB.*MAX_TABLE_BYTES"):
        cope(q, q)


def test_repr_shows_causal():
    assert "causal=False" in repr(ContextualPosition(8, 2, max_positions=4, causal=False))


@pytest.mark.parametrize("attention", ["eager", "blocked", "sdpa"])
def test_a_model_of_another_head_width_is_refused_naming_q(attention):
    # a CoPE built for head width 4 in a model of head width 8 failed inside the matmul with
    # 'mat1 and mat2 shapes cannot be multiplied (10x8 and 4x8)' on every backend
    from posenc.models import Transformer

    cope = ContextualPosition(4, 2, max_positions=8)
    model = Transformer(20, 16, 1, 2, position=cope, causal=True, attention=attention)
    with pytest.raises(ValueError, match=r"`q` must have head width 4, got shape \(1, 2, 5, 8\)"):
        model(torch.randint(0, 20, (1, 5)))


def test_autocast_counts_positions_in_float32():
    # inside torch.autocast(bfloat16) the gates' matmul ran in bf16, so the positions came out bf16 and
    # the bias refused them ('`positions` must be an integer, float32 or float64 tensor, got torch.bfloat16'):
    # every CoPE model failed its first forward under autocast
    torch.manual_seed(0)
    module = ContextualPosition(4, 2, max_positions=8)
    q, k = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = contextual_positions(q, k, max_positions=8)
        bias = module(q, k)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, contextual_positions(q, k, max_positions=8), atol=0, rtol=0)
    torch.testing.assert_close(bias, module(q, k), atol=0.05, rtol=0.02)  # the logits' bf16 matmul only


def test_vmap_over_the_batch_equals_the_batched_call():
    # the range check of the interpolated positions read them on the host and raised under torch.vmap
    torch.manual_seed(0)
    module = ContextualPosition(4, 2, max_positions=8)
    q, k = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    got = torch.vmap(lambda a, b: module(a[None], b[None])[0])(q, k)
    torch.testing.assert_close(got, module(q, k), atol=1e-6, rtol=1e-6)
