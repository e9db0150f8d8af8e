"""eager_attention's arguments: each bad one is refused by name."""

import pytest
import torch

from posenc.attention import blocked_attention, eager_attention, flex_attention, sdpa_attention


@pytest.mark.parametrize(
    "fn",
    [eager_attention, lambda *a, **kw: blocked_attention(*a, **kw)[0], flex_attention],
    ids=["eager", "blocked", "flex"],
)
@pytest.mark.parametrize("scale, error", [("a", TypeError), (float("nan"), ValueError), (float("inf"), ValueError)])
def test_scale_must_be_a_finite_number(fn, scale, error):
    # a string failed inside torch's multiplication (or float()); NaN and inf gave NaN outputs
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(error, match="`scale`"):
        fn(q, q, q, scale=scale)


def test_a_scale_override_is_used():
    q, k, v = (torch.randn(1, 2, 3, 4, dtype=torch.float64) for _ in range(3))
    want = (q @ k.transpose(-1, -2) * 0.3).softmax(-1) @ v
    torch.testing.assert_close(eager_attention(q, k, v, scale=0.3), want)
    torch.testing.assert_close(blocked_attention(q, k, v, scale=0.3)[0], want)
    with torch.no_grad():
        torch.testing.assert_close(flex_attention(q, k, v, scale=0.3), want)


@pytest.mark.parametrize("fn", [eager_attention, sdpa_attention], ids=["eager", "sdpa"])
@pytest.mark.parametrize("dropout, error", [(2.0, ValueError), (-0.1, ValueError), ("x", TypeError)])
def test_dropout_must_be_a_probability(fn, dropout, error):
    # torch's own errors named neither the argument nor (SDPA) the allowed range
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(error, match="`dropout`"):
        fn(q, q, q, dropout=dropout)


def test_dropout_compiles_with_dynamic_shapes():
    # a dynamic compile traces `dropout` as a SymFloat: `training=dropout > 0` was a SymBool, which
    # F.dropout refused ("argument 'train' must be bool, not SymBool") under fullgraph=True
    torch._dynamo.reset()
    q = torch.randn(1, 2, 6, 4, requires_grad=True)
    compiled = torch.compile(lambda q, p: eager_attention(q, q, q, dropout=p), dynamic=True, fullgraph=True)
    torch.manual_seed(0)
    dropped = compiled(q, 0.5)
    dropped.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert not torch.allclose(dropped, eager_attention(q, q, q))
