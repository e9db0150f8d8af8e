"""Shaw et al. relative position representations against the naive (n, m, d) form of equations 3-5."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses
from hypothesis import given
from hypothesis import strategies as st

from posenc.attention import MaskSpec, attend
from posenc.checks import check_one
from posenc.core.positions import Positions
from posenc.functional import shaw_attention
from posenc.models import Transformer
from posenc.relative import ShawRelativePosition


def naive_shaw(q, k, v, rel_k, rel_v, max_distance, causal):
    """Equations 3-5 with a^K_ij, a^V_ij materialised for every pair, in float64, query i at key index i + m - n."""
    q, k, v = q.double(), k.double(), v.double()
    b, h, n, d = q.shape
    m = k.shape[-2]
    out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
    for head in range(h):
        tk = (rel_k[head] if rel_k.ndim == 3 else rel_k).double()
        tv = None if rel_v is None else (rel_v[head] if rel_v.ndim == 3 else rel_v).double()
        a_k = torch.zeros(n, m, d, dtype=torch.float64)
        a_v = torch.zeros(n, m, v.shape[-1], dtype=torch.float64)
        for i in range(n):
            for j in range(m):
                offset = max(-max_distance, min(max_distance, j - (i + m - n)))
                a_k[i, j] = tk[offset + max_distance]
                if tv is not None:
                    a_v[i, j] = tv[offset + max_distance]
        for bb in range(b):
            e = torch.einsum("id,ijd->ij", q[bb, head], k[bb, head].unsqueeze(0) + a_k) / math.sqrt(d)
            if causal:
                e = e.masked_fill(torch.arange(m) > torch.arange(n).unsqueeze(1) + (m - n), float("-inf"))
            w = e.softmax(-1)
            out[bb, head] = w @ v[bb, head] + torch.einsum("ij,ijd->id", w, a_v)
    return out


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("n,m", [(5, 5), (3, 7)])
def test_functional_equals_naive(values, causal, per_head, n, m):
    b, h, d, kmax = 2, 3, 4, 2
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, h, m, d), torch.randn(b, h, m, d)
    shape = (h, 2 * kmax + 1, d) if per_head else (2 * kmax + 1, d)
    rel_k, rel_v = torch.randn(shape), torch.randn(shape) if values else None
    got = shaw_attention(q, k, v, rel_k, rel_v, max_distance=kmax, causal=causal)
    want = naive_shaw(q, k, v, rel_k, rel_v, kmax, causal)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_functional_over_several_row_blocks(monkeypatch):
    monkeypatch.setattr("posenc.attention.blocked.INFERENCE_ROWS", 2)
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    rel_k, rel_v = torch.randn(3, 4), torch.randn(3, 4)
    got = shaw_attention(q, k, v, rel_k, rel_v, max_distance=1, causal=True)
    torch.testing.assert_close(got.double(), naive_shaw(q, k, v, rel_k, rel_v, 1, True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tables", ["shared", "per_head"])
def test_hooks_in_attention_equal_naive(tables):
    # the hooks inside the reference attention reproduce equations 3-5
    torch.manual_seed(1)
    model = Transformer(11, 12, 1, 3, position="shaw", max_distance=2, tables=tables).double().eval()
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    attn, enc = model.blocks[0].attn, model.position
    q, k, v = attn.qkv(x).view(2, 6, 3, 3, 4).permute(2, 0, 3, 1, 4)
    pos = Positions(6)
    got = attn(x, position=enc, q_positions=pos, k_positions=pos)
    want = naive_shaw(q, k, v, enc.rel_k.detach(), enc.rel_v.detach(), 2, False)
    want = attn.proj(want.transpose(1, 2).reshape(2, 6, 12))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)  # the attention forms logits in float32


@given(n=st.integers(1, 8), m_extra=st.integers(0, 4), kmax=st.integers(0, 3))
def test_logit_depends_only_on_clipped_offset(n, m_extra, kmax):
    m = n + m_extra
    enc = ShawRelativePosition(4, 1, max_distance=kmax, values=False)
    q = torch.randn(1, 1, 1, 4).expand(1, 1, n, 4)  # the same query everywhere
    bias = enc.score_bias(q, None, q_positions=Positions(n, m - n), k_positions=Positions(m))[0, 0]
    i = torch.arange(n).unsqueeze(1) + (m - n)
    clipped = (torch.arange(m) - i).clamp(-kmax, kmax)
    for offset in clipped.unique():
        same = bias[clipped == offset]
        assert torch.allclose(same, same[0].expand_as(same))
    # distinct tables rows give distinct values
    assert torch.allclose(bias[clipped == clipped[0, 0]][0], (q[0, 0, 0] @ enc.rel_k[clipped[0, 0] + kmax]) / 2)


def test_explicit_positions_equal_implicit():
    enc = ShawRelativePosition(4, 2, max_distance=3, tables="per_head")
    q, k = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 7, 4)
    w = torch.rand(2, 2, 5, 7).softmax(-1)
    imp = (Positions(5, 2), Positions(7))
    exp = (Positions(5, 2, torch.arange(2, 7).unsqueeze(0)), Positions(7, 0, torch.arange(7).expand(2, 7)))
    shifted = (
        Positions(5, 0, torch.arange(12, 17.0).unsqueeze(0)),
        Positions(7, 0, torch.arange(10, 17.0).unsqueeze(0)),
    )
    for qp, kp in (exp, shifted):
        torch.testing.assert_close(
            enc.score_bias(q, k, q_positions=qp, k_positions=kp),
            enc.score_bias(q, k, q_positions=imp[0], k_positions=imp[1]),
        )
        torch.testing.assert_close(
            enc.value_term(w, q_positions=qp, k_positions=kp), enc.value_term(w, q_positions=imp[0], k_positions=imp[1])
        )


def test_meta_device_and_state_dict():
    enc = ShawRelativePosition(8, 4, max_distance=5, tables="per_head", device="meta")
    assert enc.rel_k.shape == (4, 11, 8) and enc.rel_k.is_meta
    enc = enc.to_empty(device="cpu")
    enc.reset_parameters()
    assert torch.isfinite(enc.rel_k).all() and enc.rel_v.device.type == "cpu"
    other = ShawRelativePosition(8, 4, max_distance=5, tables="per_head")
    other.load_state_dict(enc.state_dict())
    assert torch.equal(other.rel_v, enc.rel_v)
    assert set(ShawRelativePosition(8, values=False).state_dict()) == {"rel_k"}


def test_out_shape_and_hooks():
    enc = ShawRelativePosition(8, 2, max_distance=1)
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)
    assert enc(q, k, v).shape == (3, 2, 4, 8)
    assert enc.hooks == {"bias", "value"} and ShawRelativePosition(8, values=False).hooks == {"bias"}
    assert enc.per_layer


def test_bad_input():
    with pytest.raises(ValueError, match="max_distance"):
        ShawRelativePosition(8, max_distance=-1)
    with pytest.raises(ValueError, match="tables"):
        ShawRelativePosition(8, tables="global")
    with pytest.raises(ValueError, match="head_dim"):
        ShawRelativePosition(0)
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="max_distance"):
        shaw_attention(q, q, q, torch.randn(3, 4), max_distance=-2)
    with pytest.raises(ValueError, match="rel_k"):
        shaw_attention(q, q, q, torch.randn(4, 4), max_distance=1)
    with pytest.raises(ValueError, match="rel_v"):
        shaw_attention(q, q, q, torch.randn(3, 4), torch.randn(3, 5), max_distance=1)
    with pytest.raises(ValueError, match="q"):
        shaw_attention(q.to(torch.complex64), q, q, torch.randn(3, 4), max_distance=1)
    with pytest.raises(ValueError, match="k"):
        shaw_attention(q, torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4), torch.randn(3, 4), max_distance=1)
    enc = ShawRelativePosition(4, max_distance=1)
    with pytest.raises(ValueError, match="positions"):
        enc.score_bias(q, q, q_positions=Positions(3, 0, torch.tensor([[0.0, 0.5, 1.0]])), k_positions=Positions(3))


def test_cached_decoding_equals_full_pass():
    result = check_one("shaw")
    assert result.ok and "skipped" not in result.detail, result.detail


def test_trains_on_previous_token_task():
    # predicting each token's left neighbour needs relative order, which only the encoding provides
    model = Transformer(8, 32, 1, 2, position="shaw", max_distance=2)

    def batch():
        x = torch.randint(0, 8, (16, 10))
        return x, torch.roll(x, 1, dims=1)

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=60)
    assert_loss_falls(losses, factor=0.7)


# -- memory ------------------------------------------------------------------------------------

def peak_bytes(fn) -> int:
    """Peak bytes allocated by the CPU allocator while ``fn`` runs (beyond what was live before)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError:  # pragma: no cover - profiler internals differ
        pytest.skip("this torch's profiler does not expose allocation events")
    live, peak, stack = 0, 0, list(roots)
    events = []
    while stack:
        node = stack.pop()
        if type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def _peaks(n: int, d: int = 64) -> tuple[int, int]:
    """Peak bytes of ordinary softmax attention and of Shaw attention (keys and values, k = 16)."""
    q, k, v = (torch.randn(1, 1, n, d) for _ in range(3))
    rel_k, rel_v = torch.randn(33, d), torch.randn(33, d)

    def plain():
        with torch.no_grad():
            ((q @ k.transpose(-1, -2)) / math.sqrt(d)).softmax(-1) @ v

    def shaw():
        with torch.no_grad():
            shaw_attention(q, k, v, rel_k, rel_v, max_distance=16)

    return peak_bytes(plain), peak_bytes(shaw)


def test_peak_memory_is_far_below_the_naive_form():
    n, d = 2048, 64
    plain, shaw = _peaks(n, d)
    naive_table = n * n * d * 4  # a^K_ij alone, float32 (n, m, d)
    assert 0 < shaw < naive_table / 10
    # beyond ordinary attention's own (n, m) logits and weights, the extra memory grows linearly:
    # doubling the length doubles it (a quadratic term would quadruple it)
    plain_half, shaw_half = _peaks(n // 2, d)
    extra, extra_half = shaw - plain, shaw_half - plain_half
    assert extra <= 0 or extra < 2.5 * extra_half
    assert extra < 0.5 * n * n * 4  # under half of one (n, m) float32 matrix


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (3, 2), (4, 6), (5, 5)])
@pytest.mark.parametrize("gap", [-6, -1, 0, 2, 5])
@pytest.mark.parametrize("kmax", [0, 1, 2])
def test_offset_expand_and_reduce_equal_gather_and_scatter(n, m, gap, kmax):
    # the diagonal-run forms used for implicit positions against a per-pair index
    from posenc.relative.shaw import OffsetRuns, expand_offsets, reduce_offsets

    runs = OffsetRuns.of(n, m, gap, kmax)
    index = ((torch.arange(m) - torch.arange(n).unsqueeze(1) + gap).clamp(-kmax, kmax) + kmax).expand(2, n, m)
    per_row = torch.randn(2, n, 2 * kmax + 1, dtype=torch.float64, requires_grad=True)
    grid = torch.randn(2, n, m, dtype=torch.float64, requires_grad=True)
    assert torch.equal(expand_offsets(per_row, runs), per_row.gather(-1, index))
    want = torch.zeros(2, n, 2 * kmax + 1, dtype=torch.float64).scatter_add(-1, index, grid)
    torch.testing.assert_close(reduce_offsets(grid, runs), want)
    assert torch.autograd.gradcheck(lambda p: expand_offsets(p, runs), (per_row,))
    assert torch.autograd.gradcheck(lambda g: reduce_offsets(g, runs), (grid,))


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_of_implicit_and_explicit_positions_agree(causal):
    # implicit positions take the diagonal-run path, explicit ones the per-pair index
    torch.manual_seed(0)
    model = Transformer(11, 12, 1, 3, position="shaw", max_distance=2, causal=causal).double()
    tokens = torch.randint(0, 11, (2, 7))
    grads = []
    for positions in (None, torch.arange(7)):
        model.zero_grad()
        model(tokens, positions=positions).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("m", [12, 15])
def test_functional_blocks_with_whole_band(monkeypatch, causal, m):
    # inference in blocks of 4 rows, each against the keys it can see
    monkeypatch.setattr("posenc.attention.blocked.INFERENCE_ROWS", 4)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 12, 4, generator=gen)
    k, v = torch.randn(2, 2, m, 4, generator=gen), torch.randn(2, 2, m, 4, generator=gen)
    rel_k, rel_v = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 5, 4, generator=gen)
    got = shaw_attention(q, k, v, rel_k, rel_v, max_distance=2, causal=causal)
    torch.testing.assert_close(got.double(), naive_shaw(q, k, v, rel_k, rel_v, 2, causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_functional_gradcheck(causal):
    gen = torch.Generator().manual_seed(4)
    shapes = [(1, 2, 4, 3), (1, 2, 6, 3), (1, 2, 6, 3), (5, 3), (5, 3)]
    inputs = [torch.randn(shape, dtype=torch.float64, generator=gen) for shape in shapes]
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: shaw_attention(*a, max_distance=2, causal=causal), inputs)
    # the differentiable form equals the inference form and the naive one
    with torch.no_grad():
        inference = shaw_attention(*inputs, max_distance=2, causal=causal)
    torch.testing.assert_close(shaw_attention(*inputs, max_distance=2, causal=causal).detach(), inference)
    torch.testing.assert_close(inference, naive_shaw(*[t.detach() for t in inputs], 2, causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m,per_head,kmax", [(5, 5, False, 2), (4, 7, True, 1), (6, 6, False, 0), (3, 8, True, 3)])
def test_blocked_kernel_equals_naive_with_exact_gradients(monkeypatch, causal, n, m, per_head, kmax):
    # the blocked kernel with the key and value terms per block, as the reference Transformer runs it
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 2)  # causal rows in blocks of 2
    gen = torch.Generator().manual_seed(5)
    h, d = 2, 3
    shape = (h, 2 * kmax + 1, d) if per_head else (2 * kmax + 1, d)
    shapes = [(2, h, n, d), (2, h, m, d), (2, h, m, d), shape, shape]
    inputs = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    got = shaw_attention(*inputs, max_distance=kmax, causal=causal)
    torch.testing.assert_close(got, naive_shaw(*inputs, kmax, causal))
    inputs = [t.requires_grad_() for t in inputs]
    fn = lambda *a: shaw_attention(*a, max_distance=kmax, causal=causal)
    assert torch.autograd.gradcheck(fn, inputs)


def test_model_uses_one_attention_node_with_the_same_result():
    torch.manual_seed(2)
    model = Transformer(11, 12, 1, 3, position="shaw", max_distance=2, causal=True).double()
    tokens = torch.randint(0, 11, (2, 6))
    fused = model(tokens)
    # explicit positions take the score_bias / value_term hooks instead
    torch.testing.assert_close(fused, model(tokens, positions=torch.arange(6)))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_offset,k_offset", [(2, 0), (0, 3), (5, 1)])
def test_blocked_terms_at_any_offsets_equal_the_hooks(causal, q_offset, k_offset):
    torch.manual_seed(6)
    enc = ShawRelativePosition(3, 2, max_distance=2, tables="per_head").double()
    q = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 2, 6, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    qp, kp = Positions(4, q_offset), Positions(6, k_offset)
    got = attend(q, k, v, position=enc, q_positions=qp, k_positions=kp, mask=MaskSpec(causal=causal), backend="blocked")
    # reference: the same offsets as explicit positions, through score_bias and value_term
    qe = Positions(4, 0, torch.arange(q_offset, q_offset + 4).unsqueeze(0))
    ke = Positions(6, 0, torch.arange(k_offset, k_offset + 6).unsqueeze(0))
    logits = q @ k.transpose(-1, -2) / math.sqrt(3) + enc.score_bias(q, k, q_positions=qe, k_positions=ke)
    if causal:
        logits = logits.masked_fill(torch.arange(6) > torch.arange(4).unsqueeze(1) + 2, float("-inf"))
    w = logits.softmax(-1)
    want = w @ v + enc.value_term(w, q_positions=qe, k_positions=ke)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.square().sum(), (q, k, v, enc.rel_k, enc.rel_v))
    for a, b in zip(grads, torch.autograd.grad(want.square().sum(), (q, k, v, enc.rel_k, enc.rel_v))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("rows,keys", [(1, 1), (3, 3), (4, 9), (6, 4)])
@pytest.mark.parametrize("gap", [-7, -2, 0, 1])
@pytest.mark.parametrize("kmax,top", [(1, 0), (2, 0), (2, -1), (3, 2)])
def test_causal_band_add_and_read_follow_the_diagonals(rows, keys, gap, kmax, top):
    # the strided view (rows whose band lies inside the block) and the clamped indices (the others)
    # against the entries written out: column i + first + u of row i, where it exists
    from posenc.relative.shaw import CausalBand, _band_add_, _band_read

    band = CausalBand.of(rows, keys, gap, kmax, top)
    assert band.width == top + kmax
    gen = torch.Generator().manual_seed(7)
    values = torch.randn(2, rows, band.width, dtype=torch.float64, generator=gen)
    grid = torch.randn(2, rows, keys, dtype=torch.float64, generator=gen)
    want_grid, want_read = grid.clone(), torch.zeros_like(values)
    for i in range(rows):
        for u in range(band.width):
            j = i + band.first + u
            assert (j - i + gap) + kmax == u + 1  # table row u + 1
            if 0 <= j < keys:
                want_grid[:, i, j] += values[:, i, u]
                want_read[:, i, u] = grid[:, i, j]
    torch.testing.assert_close(_band_read(grid, band), want_read)
    _band_add_(grid, values, band)
    torch.testing.assert_close(grid, want_grid)


def test_causal_terms_only_under_a_causal_mask_that_leaves_each_row_a_key():
    from posenc.relative.shaw import shaw_key_block, shaw_value_block

    q, rel_k, rel_v = torch.randn(1, 2, 5, 3), torch.randn(5, 3), torch.randn(5, 3)
    key, value = shaw_key_block(q, rel_k, 0, 2), shaw_value_block(rel_v, 0, 2)
    for mask, n, m, width in [
        (MaskSpec(causal=True), 5, 5, 2),  # offsets -1, 0 of table rows 1, 2
        (MaskSpec(causal=True, window=3), 5, 5, 2),
        (MaskSpec(), 5, 5, None),
        (MaskSpec(causal=True, key_mask=torch.ones(1, 5, dtype=torch.bool)), 5, 5, None),
        (MaskSpec(causal=True), 5, 9, None),  # gap 0 with 4 more keys: offsets up to 4 > k seen
    ]:
        got_key, got_value = key.under_mask(mask, n, m), value.under_mask(mask, n, m)
        if width is None:
            assert got_key is key and got_value is value
        else:
            assert got_key.tensors[0].shape == (1, 2, 5, width)
            # the features' table: a^V_0, then a^V_t - a^V_0 for the visible offsets
            assert got_value is not value and got_value.table.shape == (1 + width, 3)
            torch.testing.assert_close(got_value.table, torch.cat([rel_v[:1], rel_v[1 : 1 + width] - rel_v[:1]]))


@pytest.mark.parametrize("tables", ["shared", "per_head"])
@pytest.mark.parametrize("window", [None, 3])
def test_causal_model_on_the_blocked_kernel_equals_eager_with_gradients(monkeypatch, tables, window):
    # the Transformer's path (implicit positions, causal mask, several row blocks) against the eager
    # reference, output and every parameter's gradient
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 3)
    torch.manual_seed(8)
    kwargs = {"position": "shaw", "max_distance": 2, "tables": tables, "causal": True, "window": window}
    blocked = Transformer(11, 12, 1, 3, attention="blocked", **kwargs).double()
    eager = Transformer(11, 12, 1, 3, attention="eager", **kwargs).double()
    eager.load_state_dict(blocked.state_dict())
    tokens = torch.randint(0, 11, (2, 10))
    outs = [model(tokens) for model in (blocked, eager)]
    torch.testing.assert_close(outs[0], outs[1])
    for out in outs:
        out.square().mean().backward()
    for a, b in zip(blocked.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
