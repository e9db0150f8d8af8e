import math

import pytest
import torch

from posenc.attention import MaskSpec, blocked_attention, eager_attention
from posenc.attention.blocked import attention_with_bias


def reference(q, k, v, bias, causal=False):
    """softmax(q k^T / sqrt(d) + bias) v, one (batch, head, query) at a time in float64; causal:
    query i (the last n of m tokens) sees keys j <= i + m - n."""
    b, h, n, d = q.shape
    m = k.shape[-2]
    bias = torch.zeros(()) if bias is None else bias
    bias = bias.double().expand(b, h, n, m)
    out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
    weights = torch.zeros(b, h, n, m, dtype=torch.float64)
    for bb in range(b):
        for hh in range(h):
            for i in range(n):
                logits = torch.stack([q[bb, hh, i].double() @ k[bb, hh, j].double() / d**0.5 for j in range(m)])
                logits = logits + bias[bb, hh, i]
                if causal:
                    logits[i + m - n + 1 :] = -math.inf
                w = torch.softmax(logits, dim=0)
                weights[bb, hh, i] = w
                out[bb, hh, i] = w @ v[bb, hh].double()
    return out, weights


CASES = [  # n, m, causal, bias shape (None: no bias)
    (4, 6, False, (1, 3, 4, 6)),
    (4, 4, False, (4,)),
    (5, 5, True, (1, 3, 5, 5)),
    (5, 8, True, (2, 1, 5, 8)),
    (7, 7, True, (3, 7, 7)),
    (4, 5, False, None),
    (6, 6, True, None),
]


@pytest.fixture
def small_blocks(monkeypatch):
    # causal attention in blocks of 2 query rows, so that the tiny cases cover several blocks
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 2)


def make(n, m, causal, shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, n, 5, dtype=torch.float64, generator=gen)
    k = torch.randn(2, 3, m, 5, dtype=torch.float64, generator=gen)
    v = torch.randn(2, 3, m, 4, dtype=torch.float64, generator=gen)
    bias = None
    if shape is not None:
        bias = torch.randn(shape, dtype=torch.float64, generator=gen)
    return q, k, v, bias


@pytest.mark.parametrize("n,m,causal,shape", CASES)
def test_equals_reference(small_blocks, n, m, causal, shape):
    q, k, v, bias = make(n, m, causal, shape)
    out, weights = attention_with_bias(q, k, v, bias, causal=causal)
    want_out, want_weights = reference(q, k, v, bias, causal)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(weights, want_weights)
    bias32 = None if bias is None else bias.float()
    out32, _ = attention_with_bias(q.float(), k.float(), v.float(), bias32, causal=causal)
    torch.testing.assert_close(out32.double(), want_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,m,causal,shape", CASES)
def test_gradcheck_through_output_and_weights(small_blocks, n, m, causal, shape):
    q, k, v, bias = make(n, m, causal, shape, seed=1)
    inputs = [t.requires_grad_() for t in (q, k, v, bias) if t is not None]
    probe = torch.randn(2, 3, n, m, dtype=torch.float64)

    def both(*args):
        out, weights = attention_with_bias(*args[:3], args[3] if len(args) > 3 else None, causal=causal)
        return out, (weights * probe).sum(-1)  # a use of the weights, as a value term makes

    def output_only(*args):
        b = args[3] if len(args) > 3 else None
        return attention_with_bias(*args[:3], b, causal=causal, need_weights=False)[0]

    assert torch.autograd.gradcheck(both, inputs)
    assert torch.autograd.gradcheck(output_only, inputs)


def test_causal_mask_already_in_the_bias_is_harmless(small_blocks):
    q, k, v, bias = make(5, 7, True, (1, 3, 5, 7))
    visible = torch.arange(7) <= torch.arange(5).unsqueeze(1) + 2
    masked = bias.masked_fill(~visible, torch.finfo(torch.float64).min / 2)
    torch.testing.assert_close(attention_with_bias(q, k, v, masked, causal=True)[0], reference(q, k, v, bias, True)[0])
    torch.testing.assert_close(attention_with_bias(q, k, v, masked)[0], reference(q, k, v, bias, True)[0])


def test_weights_only_when_asked():
    q, k, v, bias = make(3, 3, False, (1, 3, 3, 3))
    assert attention_with_bias(q, k, v, bias, need_weights=False)[1] is None


def test_bad_input():
    q, k, v, _ = make(3, 4, False, None)
    with pytest.raises(ValueError, match="bias"):
        attention_with_bias(q, k, v, torch.zeros(2, 3, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="`q`, `k`, `v`"):
        attention_with_bias(q, k[..., :4], v)
    with pytest.raises(ValueError, match="q"):
        attention_with_bias(q[0], k, v)


def test_flags_are_true_or_false():
    # a flag read by truthiness: causal='no' hid the later keys, need_weights='no' returned the weights
    q, k, v, _ = make(3, 3, False, None)
    with pytest.raises(TypeError, match="`causal` must be True or False, got str 'no'"):
        attention_with_bias(q, k, v, causal="no")
    with pytest.raises(TypeError, match="`need_weights` must be True or False, got str 'no'"):
        attention_with_bias(q, k, v, need_weights="no")
    with pytest.raises(TypeError, match="`need_weights` must be True or False, got int 1"):
        blocked_attention(q, k, v, need_weights=1)


@pytest.mark.parametrize("causal", [False, True])
def test_terms_with_their_own_backward_through_output_and_weights(small_blocks, causal):
    # Shaw's key and value terms declare their own block backward (an in-place key term less a row
    # constant, a value term whose weight gradient leaves out a per-row shift); through the weights
    # too, the kernel's softmax backward must take the shift into account
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec
    from posenc.relative.shaw import clipped_offsets, shaw_key_block, shaw_value_block

    n, m, kmax = 6, 8, 2
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, length, 4, dtype=torch.float64, generator=gen) for length in (n, m, m))
    rel_k, rel_v = (torch.randn(2 * kmax + 1, 4, dtype=torch.float64, generator=gen) for _ in range(2))
    probe = torch.randn(1, 2, n, m, dtype=torch.float64, generator=gen)

    def run(q, k, v, rel_k, rel_v):
        out, weights = blocked_attention(
            q, k, v,
            bias_term=shaw_key_block(q, rel_k / 2.0, n - m, kmax),  # scale 1/sqrt(4)
            value_term=shaw_value_block(rel_v, n - m, kmax),
            mask=MaskSpec(causal=causal),
            need_weights=True,
        )
        return out, (weights * probe).sum(-1)

    # the reference: every pair's clipped offset written out
    index = clipped_offsets(torch.arange(m) - torch.arange(n).unsqueeze(1) + n - m, kmax)
    bias = torch.einsum("bhnd,nmd->bhnm", q, rel_k[index]) / 2.0
    want_out, want_weights = reference(q, k, v, bias, causal)
    want_out = want_out + torch.einsum("bhnm,nmd->bhnd", want_weights, rel_v[index])
    out, used = run(q, k, v, rel_k, rel_v)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(used, (want_weights * probe).sum(-1))
    inputs = [t.clone().requires_grad_() for t in (q, k, v, rel_k, rel_v)]
    assert torch.autograd.gradcheck(run, inputs)


def test_a_term_takes_its_form_for_the_mask_once():
    # BlockTerm.under_mask is called once per run with the mask and the sizes; its result runs
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec
    from posenc.core.terms import BlockTerm

    calls = []
    q, k, v = (torch.randn(1, 2, 4, 3, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    general = BlockTerm(lambda s, e, k0, k1: torch.zeros(()))

    def under_mask(mask, n, m):
        calls.append((mask, n, m))
        return BlockTerm(lambda s, e, k0, k1: bias[..., s:e, k0:k1])

    mask = MaskSpec(causal=True)
    out, _ = blocked_attention(q, k, v, bias_term=general._replace(under_mask=under_mask), mask=mask)
    assert calls == [(mask, 4, 4)]
    torch.testing.assert_close(out, reference(q, k, v, bias, causal=True)[0])


@pytest.mark.parametrize("causal", [False, True])
def test_query_shift_is_a_bias_linear_in_the_keys(small_blocks, causal):
    # BlockTerm.query_shift u (h, d): the kernel's own product carries u . k_j * scale, with exact
    # gradients to u, q and k, and with or without gradients the same output
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec
    from posenc.core.terms import BlockTerm

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, length, 4, dtype=torch.float64, generator=gen) for length in (5, 7, 7))
    u = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    extra = torch.randn(1, 3, 5, 7, dtype=torch.float64, generator=gen)

    def run(q, k, v, u, extra):
        term = BlockTerm(lambda s, e, k0, k1, t: t[..., s:e, k0:k1], (extra,), query_shift=u)
        return blocked_attention(q, k, v, bias_term=term, mask=MaskSpec(causal=causal))[0]

    bias = torch.einsum("hd,bhmd->bhm", u, k).unsqueeze(-2) / 2.0 + extra  # scale 1/sqrt(4)
    torch.testing.assert_close(run(q, k, v, u, extra), reference(q, k, v, bias, causal)[0])
    with torch.no_grad():
        torch.testing.assert_close(run(q, k, v, u, extra), reference(q, k, v, bias, causal)[0])
    inputs = [t.clone().requires_grad_() for t in (q, k, v, u, extra)]
    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("own_backward", [False, True])
def test_factored_value_term(small_blocks, causal, per_head, own_backward):
    # BlockTerm.table: the block gives features of its weights (here: the weight on each key's parity),
    # the kernel multiplies all rows' features with the table at once and forms the table's gradient;
    # the term's backward (or, without one, autograd through its features) gets the features' gradient
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec
    from posenc.core.terms import BlockTerm

    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, length, 4, dtype=torch.float64, generator=gen) for length in (5, 7, 7))
    table = torch.randn(*((3,) if per_head else ()), 2, 4, dtype=torch.float64, generator=gen)
    probe = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=gen)
    parity = torch.arange(7) % 2

    def features(weights, s, e, k0, k1):  # (b, h, rows, 2): the weights on even and on odd keys
        onehot = torch.nn.functional.one_hot(parity[k0:k1], 2).to(weights.dtype)
        return weights @ onehot

    def backward(grad, weights, s, e, k0, k1, tensors, grads, grad_weights):
        grad_weights += grad[..., parity[k0:k1]]  # no per-row shift left out

    def run(q, k, v, table):
        term = BlockTerm(features, (), backward if own_backward else None, table=table)
        out, weights = blocked_attention(
            q, k, v, value_term=term, mask=MaskSpec(causal=causal), need_weights=True
        )
        return out, (weights * probe).sum(-1)

    want_out, want_weights = reference(q, k, v, None, causal)
    rows = table if per_head else table.expand(3, 2, 4)
    want_out = want_out + torch.einsum("bhnm,hmd->bhnd", want_weights, rows[:, parity])
    out, used = run(q, k, v, table)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(used, (want_weights * probe).sum(-1))
    with torch.no_grad():
        torch.testing.assert_close(run(q, k, v, table)[0], want_out)
    inputs = [t.clone().requires_grad_() for t in (q, k, v, table)]
    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("n", [32, 256, 1000, 8192])
@pytest.mark.parametrize("window", [None, 100])
def test_rows_per_block_with_and_without_gradients(n, window):
    """A mask that hides keys gets blocks of at least MIN_BLOCK_ROWS rows, at most MAX_BLOCKS of them,
    with gradients or without (capped at INFERENCE_ROWS rows then); without such a mask, one block
    when training and blocks of INFERENCE_ROWS rows without gradients. The blocks tile the rows."""
    from posenc.attention.blocked import INFERENCE_ROWS, MAX_BLOCKS, MIN_BLOCK_ROWS, row_blocks
    from posenc.attention.masks import MaskSpec

    for mask in (MaskSpec(causal=True, window=window), MaskSpec(window=window)):
        skips = mask.causal or mask.window is not None
        for training in (True, False):
            blocks = row_blocks(n, n, mask, training=training)
            assert [s for s, *_ in blocks] == list(range(0, n, blocks[0][1]))
            assert blocks[-1][1] == n
            rows = blocks[0][1]
            if skips:
                assert rows == n or rows >= MIN_BLOCK_ROWS or (not training and rows == INFERENCE_ROWS)
                assert len(blocks) <= MAX_BLOCKS or (not training and rows == INFERENCE_ROWS)
            if not training:
                assert rows <= INFERENCE_ROWS
                if skips and n == 256:
                    assert rows == MIN_BLOCK_ROWS  # short causal inference skips the hidden keys too
            elif not skips:
                assert rows == n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_forward_equals_the_gradient_free_one(dtype):
    """The forward that keeps weights for the backward (its softmax in place over the logits) and the
    one without gradients give the same output, bit for bit, over several causal blocks."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 200, 16, generator=gen).to(dtype) for _ in range(3))
    with torch.no_grad():
        plain, _ = attention_with_bias(q, k, v, causal=True, need_weights=False)
    trained, _ = attention_with_bias(*(t.requires_grad_() for t in (q, k, v)), causal=True, need_weights=False)
    assert torch.equal(trained.detach(), plain)
    expected, _ = reference(q[:1, :1], k[:1, :1], v[:1, :1], None, causal=True)
    torch.testing.assert_close(plain[:1, :1].double(), expected, atol=1e-2 if dtype == torch.bfloat16 else 1e-5, rtol=0)


def test_second_derivatives_are_refused_not_left_out():
    """A backward with create_graph=True formed first-order gradients with no graph behind them, so a
    gradient penalty or Hessian-vector product through attention silently lost the attention's part."""
    from posenc.attention.blocked import blocked_attention
    from posenc.attention.masks import MaskSpec

    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    out, _ = blocked_attention(q, k, v, mask=MaskSpec(causal=True))
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad((out @ w).pow(2).sum(), [q, w], create_graph=True)
    out, _ = blocked_attention(q, k, v, mask=MaskSpec(causal=True))
    grads = torch.autograd.grad((out @ w).pow(2).sum(), [q, k, v, w])  # first order as before
    assert all(g.shape == t.shape for g, t in zip(grads, (q, k, v, w)))


@pytest.mark.parametrize("docs", [False, True])
def test_a_row_that_sees_no_key_passes_no_gradient_to_its_logits(docs):
    # its output is the mean of the values whatever q, k and the bias are: q, k and the bias get
    # the eager reference's gradients (none from that row), v its share of the mean
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 3, dtype=torch.float64, generator=g) for _ in range(3))
    bias = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=g)
    if docs:
        q_docs, k_docs = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]]), torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
        mask = MaskSpec(q_docs=q_docs, k_docs=k_docs)
    else:
        mask = MaskSpec(key_mask=torch.tensor([[True, True, False, True], [False] * 4]))
    grad = torch.randn(2, 2, 4, 3, dtype=torch.float64, generator=g)

    def grads(fn):
        ts = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
        (fn(*ts) * grad).sum().backward()
        return [t.grad for t in ts]

    want = grads(lambda q, k, v, bias: eager_attention(q, k, v, bias=bias, mask=mask))
    got = grads(lambda q, k, v, bias: blocked_attention(q, k, v, bias, mask=mask)[0])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # traced by torch.compile, the kernel's blocks are plain operations differentiated by autograd: an
    # additive mask there gave q, k and the bias that row's gradients (off eager's by up to 0.82)
    torch._dynamo.reset()
    traced = torch.compile(lambda q, k, v, bias: blocked_attention(q, k, v, bias, mask=mask)[0], backend="eager", fullgraph=True)
    for a, b in zip(grads(traced), want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["alibi", "t5"])
def test_a_bias_term_of_other_heads_is_refused_by_name(name):
    # an ALiBi or T5 bias built for 3 heads in a 2-head model failed in the first block's in-place add
    # ('The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 1'),
    # where the eager and SDPA backends refuse the bias by name
    import posenc
    from posenc.models import Transformer

    model = Transformer(20, 16, 1, 2, position=posenc.create(name, heads=3), causal=True, attention="blocked")
    with pytest.raises(ValueError, match=r"`bias_term` must give blocks .* \(b, h\) = \(1, 2\) .* got \(1, 3, 1, 1\)"):
        model(torch.randint(0, 20, (1, 5)))
