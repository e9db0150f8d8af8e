"""Transformer-XL relative terms (b)-(d) against a float64 per-(i, j) transcription of equation 4."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.attention import MaskSpec, attend
from posenc.checks import check_one
from posenc.core.positions import Positions
from posenc.models import Transformer
from posenc.relative import TransformerXLRelative


def naive_terms(enc: TransformerXLRelative, q, k, q_pos, k_pos):
    """((b) + (c) + (d)) / sqrt(d) for every pair, one at a time; positions (n,), (m,) float64."""
    dim, h, dh = enc.dim, enc.heads, enc.head_dim
    inv_freq = torch.tensor([10000.0 ** (-2 * t / dim) for t in range(dim // 2)], dtype=torch.float64)
    w_r, u, v = enc.w_r.weight.double(), enc.u.double(), enc.v.double()
    b, _, n, _ = q.shape
    m = k.shape[-2]
    out = torch.zeros(b, h, n, m, dtype=torch.float64)
    for i in range(n):
        for j in range(m):
            dist = float(q_pos[i] - k_pos[j])
            r = torch.cat([torch.sin(dist * inv_freq), torch.cos(dist * inv_freq)])  # R_{i-j}: sines, then cosines
            wr = (w_r @ r).view(h, dh)
            for bb in range(b):
                for hh in range(h):
                    term_b = q[bb, hh, i].double() @ wr[hh]
                    term_c = u[hh] @ k[bb, hh, j].double()
                    term_d = v[hh] @ wr[hh]
                    out[bb, hh, i, j] = (term_b + term_c + term_d) / math.sqrt(dh)
    return out


def _enc(causal=False):
    torch.manual_seed(3)
    enc = TransformerXLRelative(8, 2, 4, causal=causal)
    with torch.no_grad():
        enc.u.normal_()
        enc.v.normal_()
    return enc


@pytest.mark.parametrize(
    "n,m,q_off,k_off",
    [(5, 5, 0, 0), (3, 7, 4, 0), (4, 5, 3, 0), (4, 4, 9, 2)],  # aligned, cached, not aligned, shifted
)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_bidirectional_equals_naive(n, m, q_off, k_off, dtype, tol):
    enc = _enc().to(dtype)
    q, k = torch.randn(2, 2, n, 4, dtype=dtype), torch.randn(2, 2, m, 4, dtype=dtype)
    got = enc.score_bias(q, k, q_positions=Positions(n, q_off), k_positions=Positions(m, k_off))
    want = naive_terms(enc, q, k, torch.arange(q_off, q_off + n), torch.arange(k_off, k_off + m))
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("n,m", [(6, 6), (2, 7), (1, 4)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_causal_rel_shift_equals_naive_where_visible(n, m, dtype, tol):
    enc = _enc(causal=True).to(dtype)
    q, k = torch.randn(1, 2, n, 4, dtype=dtype), torch.randn(1, 2, m, 4, dtype=dtype)
    got = enc.score_bias(q, k, q_positions=Positions(n, m - n), k_positions=Positions(m))
    want = naive_terms(enc, q, k, torch.arange(m - n, m), torch.arange(m))
    visible = torch.arange(m) <= torch.arange(n).unsqueeze(1) + (m - n)
    torch.testing.assert_close(got.double()[..., visible], want[..., visible], atol=tol, rtol=tol)
    assert torch.isfinite(got).all()


def test_explicit_positions_equal_implicit_and_naive():
    enc = _enc()
    q, k = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 6, 4)
    implicit = enc.score_bias(q, k, q_positions=Positions(4, 2), k_positions=Positions(6))
    q_pos, k_pos = Positions(4, 0, torch.arange(2, 6).unsqueeze(0)), Positions(6, 0, torch.arange(6).unsqueeze(0))
    explicit = enc.score_bias(q, k, q_positions=q_pos, k_positions=k_pos)
    torch.testing.assert_close(explicit, implicit)
    # fractional positions: one table row per pair
    qp, kp = torch.tensor([0.5, 1.5, 2.25, 4.0]), torch.tensor([0.0, 0.75, 1.0, 2.0, 3.5, 5.0])
    q_pos, k_pos = Positions(4, 0, qp.unsqueeze(0)), Positions(6, 0, kp.unsqueeze(0))
    frac = enc.score_bias(q, k, q_positions=q_pos, k_positions=k_pos)
    torch.testing.assert_close(frac.double(), naive_terms(enc, q, k, qp.double(), kp.double()), atol=1e-5, rtol=1e-5)


def test_depends_on_distance_only():
    enc = _enc()
    q = torch.randn(1, 1, 1, 4).expand(1, 2, 5, 4)
    k = torch.randn(1, 1, 1, 4).expand(1, 2, 5, 4)
    bias = enc.score_bias(q, k, q_positions=Positions(5), k_positions=Positions(5))[0, 0]
    for delta in range(-4, 5):
        diag = bias.diagonal(-delta)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag))


def test_meta_device_state_dict_and_shape():
    enc = TransformerXLRelative(16, 4, 4, device="meta")
    assert enc.w_r.weight.is_meta
    enc = enc.to_empty(device="cpu")
    other = TransformerXLRelative(16, 4, 4)
    other.load_state_dict(enc.state_dict())
    assert set(other.state_dict()) == {"u", "v", "w_r.weight"}
    q, k = torch.randn(3, 4, 5, 4), torch.randn(3, 4, 5, 4)
    bias = other.score_bias(q, k, q_positions=Positions(5), k_positions=Positions(5))
    assert bias.shape == (3, 4, 5, 5)


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        TransformerXLRelative(7, 1, 7)
    with pytest.raises(ValueError, match="heads"):
        TransformerXLRelative(8, 0, 4)
    with pytest.raises(ValueError, match="base"):
        TransformerXLRelative(8, 2, 4, base=-1.0)
    with pytest.raises(ValueError, match="dim"):
        Transformer(10, 9, 1, 3, position="transformer_xl")  # odd model width


def test_cached_decoding_equals_full_pass():
    result = check_one("transformer_xl")
    assert result.ok and "skipped" not in result.detail, result.detail


def test_trains_in_the_reference_transformer():
    model = Transformer(8, 32, 1, 2, position="transformer_xl")

    def batch():
        x = torch.randint(0, 8, (16, 10))
        return x, torch.roll(x, 1, dims=1)

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=60)
    assert_loss_falls(losses, factor=0.7)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m", [(5, 5), (4, 7), (9, 9), (1, 3)])
def test_blocked_terms_equal_bias_form_with_exact_gradients(monkeypatch, causal, n, m):
    # terms (b)-(d) one block at a time in the blocked kernel, against score_bias + softmax
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 2)  # rows in blocks of 2
    torch.manual_seed(0)
    h, d = 2, 3
    xl = TransformerXLRelative(h * d, h, d, causal=causal).double()
    q = torch.randn(2, h, n, d, dtype=torch.float64)
    k, v = torch.randn(2, h, m, d, dtype=torch.float64), torch.randn(2, h, m, d, dtype=torch.float64)
    qp, kp = Positions(n, m - n), Positions(m)
    mask = MaskSpec(causal=causal)
    got = attend(q, k, v, position=xl, q_positions=qp, k_positions=kp, mask=mask, backend="blocked")
    bias = xl.score_bias(q, k, q_positions=qp, k_positions=kp)
    if causal:
        visible = torch.arange(m) <= torch.arange(n).unsqueeze(1) + m - n
        bias = bias.masked_fill(~visible, float("-inf"))
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]

    def fn(*a):
        return attend(*a, position=xl, q_positions=qp, k_positions=kp, mask=mask, backend="blocked")

    assert torch.autograd.gradcheck(fn, inputs)
    # the encoding's own parameters get the gradients of the bias form
    params = list(xl.parameters())
    got_grads = torch.autograd.grad(fn(*inputs).square().sum(), params)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=xl.score_bias(q, k, q_positions=qp, k_positions=kp).masked_fill(
        ~(torch.arange(m) <= torch.arange(n).unsqueeze(1) + m - n), float("-inf")) if causal else
        xl.score_bias(q, k, q_positions=qp, k_positions=kp))
    for a_, b_ in zip(got_grads, torch.autograd.grad(want.square().sum(), params)):
        torch.testing.assert_close(a_, b_)


def test_block_bias_only_for_implicit_positions():
    causal = TransformerXLRelative(6, 2, 3, causal=True)
    q = k = torch.randn(1, 2, 4, 3)
    explicit = Positions(4, 0, torch.arange(4).unsqueeze(0))
    assert causal.block_bias(q, k, q_positions=explicit, k_positions=explicit) is None
    assert causal.block_bias(q, k, q_positions=Positions(4), k_positions=Positions(4)) is not None


def test_model_gradients_of_fused_and_bias_paths_agree():
    # implicit positions take the fused node, explicit ones score_bias inside ordinary attention
    torch.manual_seed(0)
    model = Transformer(11, 12, 1, 3, position="transformer_xl", causal=True).double()
    tokens = torch.randint(0, 11, (2, 7))
    grads = []
    for positions in (None, torch.arange(7)):
        model.zero_grad()
        model(tokens, positions=positions).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("window", [None, 1, 3])
def test_causal_blocks_equal_eager_in_and_out_of_a_sliding_window(monkeypatch, window):
    # a causal encoding's blocks read only their non-negative distances; with a window a block's keys
    # start past key 0 (k0 > 0); without gradients the rows come in blocks of INFERENCE_ROWS
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 2)
    monkeypatch.setattr("posenc.attention.blocked.INFERENCE_ROWS", 3)
    torch.manual_seed(1)
    h, d, n, m = 2, 3, 7, 9
    xl = TransformerXLRelative(h * d, h, d, causal=True).double()
    with torch.no_grad():
        xl.u.normal_()
        xl.v.normal_()
    q, k, v = (torch.randn(2, h, length, d, dtype=torch.float64) for length in (n, m, m))
    qp, kp, mask = Positions(n, m - n), Positions(m), MaskSpec(causal=True, window=window)

    def run(backend, *inputs):
        return attend(*inputs, position=xl, q_positions=qp, k_positions=kp, mask=mask, backend=backend)

    with torch.no_grad():
        torch.testing.assert_close(run("blocked", q, k, v), run("eager", q, k, v), atol=1e-12, rtol=0)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda *a: run("blocked", *a), inputs)
    params = list(xl.parameters())
    got, want = (torch.autograd.grad(run(b, *inputs).square().sum(), params) for b in ("blocked", "eager"))
    for a_, b_ in zip(got, want):
        torch.testing.assert_close(a_, b_, atol=1e-12, rtol=0)


def test_explicit_positions_on_meta_and_in_a_compiled_graph():
    """Integer distances whose range cannot be read (meta device, traced code) take one table row per
    pair: the same scores."""
    from posenc.models import Transformer

    with torch.device("meta"):
        net = Transformer(11, 16, 1, 2, position="transformer_xl", causal=True)
    tokens = torch.zeros(1, 6, dtype=torch.long, device="meta")
    assert net(tokens, positions=torch.arange(6, device="meta")).shape == (1, 6, 11)
    assert net(tokens, document_ids=torch.tensor([[0, 0, 0, 1, 1, 1]], device="meta")).shape == (1, 6, 11)
    torch.manual_seed(0)
    net = Transformer(11, 16, 1, 2, position="transformer_xl", causal=True).eval()
    tokens, positions = torch.randint(0, 11, (1, 6)), torch.tensor([0, 2, 4, 6, 8, 10])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, fullgraph=True)(tokens, positions=positions),
                                   net(tokens, positions=positions), atol=1e-5, rtol=1e-5)


def test_relative_sinusoid_names_its_own_argument():
    # refused as `positions`, sinusoidal's argument, which relative_sinusoid does not have
    from posenc.relative import relative_sinusoid

    with pytest.raises(ValueError, match="`distances` must be finite"):
        relative_sinusoid(torch.tensor([0.0, float("nan")]), 8)
    with pytest.raises(TypeError, match="`distances` must be a torch.Tensor"):
        relative_sinusoid([0, 1], 8)
