import pytest
import torch

from posenc.bias.relative import toeplitz


@pytest.mark.parametrize("n,m", [(1, 1), (3, 5), (5, 3), (4, 4)])
def test_toeplitz_entries_and_gradient(n, m):
    x = torch.randn(2, n + m - 1, dtype=torch.float64, requires_grad=True)
    out = toeplitz(x, m)
    assert out.shape == (2, n, m)
    for i in range(n):
        for j in range(m):
            assert torch.equal(out[:, i, j], x[:, j - i + n - 1])
    # the gradient of entry x[t] is the sum of its diagonal
    probe = torch.randn(2, n, m, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * probe).sum(), x)
    want = torch.zeros_like(x)
    for i in range(n):
        for j in range(m):
            want[:, j - i + n - 1] += probe[:, i, j]
    torch.testing.assert_close(grad, want)


def _runs_diagonals(heads, width, left, right, seed=0):
    """(heads, width) values by diagonal: equal over the first `left` and the last `right` diagonals
    (different values at the two ends), random in between."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(heads, width, dtype=torch.float64, generator=gen)
    values[:, :left] = values[:, :1]
    values[:, width - right :] = values[:, -1:]
    return values


BLOCKS = [  # n, m, runs (left, right), blocks (s, e, k0, k1)
    (6, 9, (5, 3), [(0, 2, 0, 9), (2, 4, 0, 9), (4, 6, 3, 9), (0, 6, 0, 9)]),
    (8, 8, (7, 2), [(6, 8, 0, 8), (0, 3, 0, 3), (3, 5, 1, 5)]),  # a wide left run (causal-like blocks)
    (5, 12, (2, 9), [(0, 2, 0, 12), (3, 5, 4, 12)]),  # a wide right run
    (4, 4, (7, 0), [(0, 4, 0, 4)]),  # every diagonal equal
    (4, 6, (1, 1), [(1, 3, 0, 6)]),  # no runs: the whole block is spread
    (3, 12, (4, 4), [(0, 3, 0, 12), (1, 2, 0, 12)]),  # both runs span whole columns: the right one added
    (3, 12, (3, 6), [(0, 3, 0, 12), (2, 3, 1, 11)]),  # the left one added
]


@pytest.mark.parametrize("n,m,runs,blocks", BLOCKS)
def test_diagonal_block_term_add_and_backward(n, m, runs, blocks):
    from posenc.bias.relative import diagonal_block_term

    per_diagonal = _runs_diagonals(3, n + m - 1, *runs).requires_grad_()
    term = diagonal_block_term(per_diagonal, n)
    gen = torch.Generator().manual_seed(1)
    for s, e, k0, k1 in blocks:
        want = term.fn(s, e, k0, k1, per_diagonal)  # (1, h, rows, keys)
        full = toeplitz(per_diagonal.detach(), m)[:, s:e, k0:k1]
        torch.testing.assert_close(want[0].detach(), full)
        # in place, up to one constant per row: equal after subtracting each row's first entry
        logits = torch.randn(2, 3, e - s, k1 - k0, dtype=torch.float64, generator=gen)
        got = logits.clone()
        term.add(got, s, e, k0, k1, per_diagonal.detach())
        diff = got - (logits + want.detach())
        torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), atol=1e-12, rtol=0)
        # the backward sums the logit gradients along the block's diagonals, every diagonal exactly
        grad = torch.randn(2, 3, e - s, k1 - k0, dtype=torch.float64, generator=gen)
        grads = [torch.zeros_like(per_diagonal)]
        term.backward(grad, s, e, k0, k1, (per_diagonal.detach(),), grads)
        (expected,) = torch.autograd.grad(want, per_diagonal, grad.sum(0, keepdim=True))
        torch.testing.assert_close(grads[0], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_t5_on_the_blocked_kernel_equals_eager_with_exact_gradients(monkeypatch, causal):
    # blocks of 2 rows over a small bucket range: the far runs, the band and both ends all occur
    monkeypatch.setattr("posenc.attention.blocked.MIN_BLOCK_ROWS", 2)
    monkeypatch.setattr("posenc.attention.blocked.INFERENCE_ROWS", 2)
    from posenc.attention import MaskSpec, attend
    from posenc.bias.t5 import T5RelativeBias
    from posenc.core.positions import Positions

    torch.manual_seed(0)
    t5 = T5RelativeBias(2, causal=causal, num_buckets=6, max_distance=4).double()
    n, m = 9, 11
    q, k, v = (torch.randn(2, 2, length, 3, dtype=torch.float64) for length in (n, m, m))
    qp, kp = Positions(n, m - n), Positions(m)
    mask = MaskSpec(causal=causal)

    def run(backend, *inputs):
        return attend(*inputs, position=t5, q_positions=qp, k_positions=kp, mask=mask, backend=backend)

    with torch.no_grad():
        torch.testing.assert_close(run("blocked", q, k, v), run("eager", q, k, v), atol=1e-12, rtol=0)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda *a: run("blocked", *a), inputs)
    grads = [torch.autograd.grad(run(b, *inputs).square().sum(), t5.bias.weight)[0] for b in ("blocked", "eager")]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)


def test_toeplitz_traced_keeps_lengths_symbolic():
    # unfold fixed its window length in the graph: one graph per sequence length
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(toeplitz, fullgraph=True, dynamic=True, backend="eager")
    for n, m in [(3, 5), (4, 6), (6, 4), (7, 9)]:
        x = torch.randn(2, n + m - 1, dtype=torch.float64, requires_grad=True)
        probe = torch.randn(2, n, m, dtype=torch.float64)
        got = compiled(x, m)
        torch.testing.assert_close(got, toeplitz(x, m))
        (grad,) = torch.autograd.grad((got * probe).sum(), x)
        torch.testing.assert_close(grad, torch.autograd.grad((toeplitz(x, m) * probe).sum(), x)[0])
    assert counters["stats"]["unique_graphs"] == 1


#: (query, key) positions whose differences leave each narrow integer dtype
NARROW = {torch.uint8: ([200, 5], [0, 3]), torch.int8: ([100, 5], [-100, 3]), torch.int16: ([30000, 5], [-30000, 3])}


@pytest.mark.parametrize("dtype", list(NARROW))
def test_narrow_integer_positions_do_not_wrap_around(dtype):
    # the differences were formed in the positions' own dtype: uint8 0 - 200 gave 56 (and 3 - 5, 254),
    # so every relative bias read wrapped offsets (ALiBi at query 200, key 0: 0.219 instead of -0.781)
    from posenc.bias.relative import relative_positions
    from posenc.core.registry import create

    q, k = (torch.tensor(v) for v in NARROW[dtype])
    assert torch.equal(relative_positions(q.to(dtype), k.to(dtype)), relative_positions(q, k))
    for name in ("alibi", "t5", "kerple", "sandwich", "fire", "cpb", "dynamic_bias"):
        bias = create(name, heads=2)
        want = bias(2, 2, q_positions=q, k_positions=k)
        torch.testing.assert_close(bias(2, 2, q_positions=q.to(dtype), k_positions=k.to(dtype)), want, msg=name)


def test_toeplitz_checks_its_arguments():
    # m past the diagonals failed inside unfold ('maximum size for tensor at dimension 1 is 7 but size is 9'),
    # a negative m with 'size is -1 but must be >= 0', a float m in unfold's own words, a list with AttributeError
    x = torch.randn(2, 7)
    with pytest.raises(ValueError, match="`m` must be <= 8, got 9"):
        toeplitz(x, 9)
    with pytest.raises(ValueError, match="`m` must be >= 0, got -1"):
        toeplitz(x, -1)
    with pytest.raises(TypeError, match="`m` must be an int, got float 4.0"):
        toeplitz(x, 4.0)
    with pytest.raises(TypeError, match="`per_diagonal` must be a torch.Tensor"):
        toeplitz([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="`per_diagonal` must have rank >= 1"):
        toeplitz(torch.tensor(1.0), 1)
    assert toeplitz(x, 8).shape == (2, 0, 8)  # n = 7 - 8 + 1 = 0 queries
    assert toeplitz(x, 0).shape == (2, 8, 0)
