"""FlexAttention on CPU: which calls run the compiled kernel, the score_mods declared compilable, and
the compiled kernel itself (dynamic shapes: one compile serves every length) against the eager
reference."""

import pytest
import torch

from posenc.attention import MaskSpec, eager_attention
from posenc.attention import flex as flex_module
from posenc.attention.flex import compiles, flex_attention
from posenc.core.positions import Positions
from posenc.core.terms import ScoreMod
from posenc.testing.examples import build

CPU = torch.device("cpu")
#: The encodings whose score_mod is declared compilable for implicit positions.
DECLARED = ("alibi", "t5", "shaw", "kerple")


def qkv(b=1, h=2, n=6, m=None, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    return (torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g),
            torch.randn(b, h, m, d, generator=g))


def encoding(name, causal=True):
    """The example of ``name`` (Shaw: its key term alone, which FlexAttention takes; it has no causal flag)."""
    torch.manual_seed(0)
    return build(name, values=False) if name == "shaw" else build(name, causal=causal)


def mods(enc, q, k, n, m):
    qp, kp = Positions(n, offset=m - n), Positions(m)
    return enc.score_mod(q, k, q_positions=qp, k_positions=kp), enc.score_bias(q, k, q_positions=qp, k_positions=kp)


@pytest.mark.parametrize("name", DECLARED)
def test_implicit_positions_give_a_declared_score_mod_explicit_ones_do_not(name):
    enc = encoding(name)
    q, k, _ = qkv(n=3, m=5)
    mod, _ = mods(enc, q, k, 3, 5)
    assert mod.static is not None and len(mod.static) == len(mod.tensors)
    for tensor, dims in zip(mod.tensors, mod.static):
        assert all(0 <= d < tensor.ndim for d in dims)
    qp = Positions(3, explicit=torch.tensor([[1, 4, 6]]))
    kp = Positions(5, explicit=torch.tensor([[0, 1, 2, 4, 6]]))
    explicit = enc.score_mod(q, k, q_positions=qp, k_positions=kp)
    assert explicit is None or explicit.static is None


def test_the_cpu_kernel_is_compiled_only_where_inductor_builds_it(monkeypatch):
    declared = ScoreMod(lambda s, b, h, qi, ki, t: s + t[h], (torch.ones(2),), static=((0,),))
    undeclared = declared._replace(static=None)
    causal = MaskSpec(causal=True)
    q = torch.zeros(1, 2, 3, 32)
    assert compiles(q, declared, None, causal) and compiles(q, None, None, None)
    assert compiles(q, declared, None, MaskSpec(causal=True, window=3))
    assert compiles(q.bfloat16(), declared, None, causal)
    assert not compiles(q.double(), declared, None, causal)  # inductor's CPU lowering refuses float64
    assert not compiles(q[..., :16], declared, None, causal)  # wrong results for narrow heads (below)
    assert not compiles(q, undeclared, None, causal)
    assert not compiles(q, declared, torch.zeros(1, 2, 3, 3), causal)
    assert not compiles(q, declared, None, MaskSpec(causal=True, key_mask=torch.ones(1, 3, dtype=torch.bool)))
    docs = torch.zeros(1, 3, dtype=torch.long)
    assert not compiles(q, declared, None, MaskSpec(causal=True, q_docs=docs, k_docs=docs))
    monkeypatch.setattr(flex_module, "COMPILE_ON_CPU", False)
    assert not compiles(q, declared, None, causal)
    assert compiles(q.to("meta"), undeclared, None, causal)  # off CPU: always


@pytest.mark.parametrize("d", [8, 16])
def test_narrow_heads_and_float64_on_cpu_equal_the_eager_reference(d):
    """torch 2.13's compiled CPU kernel returned wrong values (some NaN) for d = 8 and 16 at n = 8, 24
    and 40: such calls run unfused, as float64 does (d = 32 compiles: the tests below)."""

    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for n in (8, 24, 40):
            q, k, v = (torch.randn(2, 2, n, d, generator=gen, dtype=dtype) for _ in range(3))
            with torch.no_grad():
                for mask in (MaskSpec(causal=True), None):
                    got = flex_attention(q, k, v, mask=mask)
                    want = eager_attention(q, k, v, mask=mask)
                    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [*DECLARED, "kerple power"])
@pytest.mark.parametrize("causal", [True, False])
def test_declared_score_mods_equal_the_eager_reference_unfused(name, causal, monkeypatch):
    # the closed forms (from kv_idx - q_idx) against the encoding's materialised bias, including a
    # query block that sits after a cache (m > n)
    monkeypatch.setattr(flex_module, "COMPILE", False)
    if name == "kerple power":
        torch.manual_seed(0)
        enc = build("kerple", causal=causal, kernel="power").requires_grad_(False)
    else:
        enc = encoding(name, causal).requires_grad_(False)
    for n, m in ((6, 6), (2, 7), (1, 5)):
        q, k, v = qkv(n=n, m=m, seed=n + m)
        mod, bias = mods(enc, q, k, n, m)
        mask = MaskSpec(causal=causal)
        want = eager_attention(q, k, v, bias=bias, mask=mask)
        with torch.no_grad():
            got = flex_attention(q, k, v, score_mod=mod, mask=mask)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _compiled_calls(enc, shapes):
    """Run the compiled kernel at each ``(n, m)`` against the eager reference; the graph count after each."""
    from torch._dynamo.utils import counters

    mask = MaskSpec(causal=True)
    graphs = []
    for n, m in shapes:
        q, k, v = qkv(n=n, m=m, seed=n + m, d=32)  # compiled on CPU from 32 features (flex.CPU_MIN_HEAD_DIM)
        mod, bias = mods(enc, q, k, n, m)
        assert compiles(q, mod, None, mask)
        with torch.no_grad():
            got = flex_attention(q, k, v, score_mod=mod, mask=mask)
        torch.testing.assert_close(got, eager_attention(q, k, v, bias=bias, mask=mask), atol=1e-5, rtol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    return graphs


# Each compile takes 5-25 s on a loaded 2-core machine.
@pytest.mark.slow
def test_compiled_cpu_kernel_equals_eager_and_stops_compiling_for_new_prompt_lengths():
    # dynamic shapes: after one or two prompt lengths (the first compile may specialise on the length,
    # the second makes it dynamic) no new length compiles again
    graphs = _compiled_calls(encoding("alibi").requires_grad_(False), ((5, 5), (9, 9), (7, 7), (12, 12)))
    assert graphs[3] == graphs[2] == graphs[1], graphs


@pytest.mark.slow
def test_compiled_cpu_kernel_decodes_with_one_compile_for_every_step():
    # one query row over a growing cache (n = 1 is specialised): T5's bucket table read at a computed
    # index, the key offset moving at every step without a recompile
    graphs = _compiled_calls(encoding("t5").requires_grad_(False), ((1, 6), (1, 7), (1, 8), (1, 11)))
    assert graphs[3] == graphs[2] == graphs[1], graphs


@pytest.mark.slow
def test_compiled_cpu_kernel_runs_shaws_key_term_through_attend():
    # Shaw's (b, h, n, 2k + 1) scores read at a clipped offset (k from the table's static size), a
    # prompt after a cache (decoding steps: the T5 test above)
    from posenc.attention import attend

    torch.manual_seed(0)
    enc = build("shaw", values=False, head_dim=32).requires_grad_(False)
    mask = MaskSpec(causal=True)
    for n, m in ((5, 9),):
        q, k, v = qkv(n=n, m=m, seed=n + m, d=32)
        assert compiles(q, enc.score_mod(q, k, q_positions=Positions(n, offset=m - n), k_positions=Positions(m)),
                        None, mask)
        pos = {"q_positions": Positions(n, offset=m - n), "k_positions": Positions(m)}
        with torch.no_grad():
            got = attend(q, k, v, position=enc, mask=mask, backend="flex", **pos)
            want = attend(q, k, v, position=enc, mask=mask, backend="eager", **pos)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask", [None, MaskSpec(causal=True), MaskSpec(window=2)])
@pytest.mark.parametrize("n, m", [(0, 5), (0, 0), (3, 0)])
def test_no_queries_or_no_keys_give_zeros_as_the_other_backends(n, m, mask, monkeypatch):
    monkeypatch.setattr(flex_module, "COMPILE", False)
    if mask is not None and n > m:
        pytest.skip("a causal or windowed mask needs n <= m")
    q, k, v = torch.randn(2, 3, n, 4), torch.randn(2, 3, m, 4), torch.randn(2, 3, m, 5)
    with torch.no_grad():
        got = flex_attention(q, k, v, mask=mask)
    assert got.shape == (2, 3, n, 5)
    torch.testing.assert_close(got, eager_attention(q, k, v, mask=mask))


def test_a_row_that_sees_no_key_gets_zeros(monkeypatch):
    # documented: FlexAttention's own result; the other backends give the mean of the values
    monkeypatch.setattr(flex_module, "COMPILE", False)
    q, k, v = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    key_mask = torch.tensor([[True, True, False], [False, False, False]])
    with torch.no_grad():
        got = flex_attention(q, k, v, mask=MaskSpec(key_mask=key_mask))
    assert torch.equal(got[1], torch.zeros(1, 3, 4))
    want = eager_attention(q, k, v, mask=MaskSpec(key_mask=key_mask))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(want[1], v[1].mean(-2, keepdim=True).expand(1, 3, 4))


@pytest.mark.parametrize("n, extra", [(1, 0), (5, 130), (127, 1), (128, 0), (129, 400), (300, 0), (513, 130)])
@pytest.mark.parametrize("causal, window", [(True, None), (True, 1), (True, 128), (True, 200), (False, 3), (False, 1000)])
def test_banded_block_mask_equals_create_block_mask(n, extra, causal, window):
    # the same tiles, partial and full, as PyTorch's create_block_mask, which evaluates the (n, m) grid
    from torch.nn.attention.flex_attention import create_block_mask

    from posenc.attention.flex import banded_block_mask

    m = n + extra
    spec = MaskSpec(causal=causal, window=window)
    want = create_block_mask(spec.mask_mod(n, m), None, None, n, m, device="cpu")
    got = banded_block_mask(spec, n, m, "cpu")
    assert torch.equal(got.to_dense(), want.to_dense())
    for count, indices in (("kv_num_blocks", "kv_indices"), ("full_kv_num_blocks", "full_kv_indices")):
        assert torch.equal(getattr(got, count), getattr(want, count))
        for row, c in enumerate(getattr(got, count)[0, 0].tolist()):
            ours, theirs = (sorted(getattr(mask, indices)[0, 0, row, :c].tolist()) for mask in (got, want))
            assert ours == theirs


def _packed_docs(b, length, seed):
    """``(b, length)`` document ids 0, 1, 2, ... in order, documents of random lengths."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(b, length, generator=g) < 0.01
    starts[:, 0] = False
    return starts.cumsum(-1)


def _tiles_of(block_mask):
    """(batch, row tile) -> (sorted partial tiles, sorted full tiles)."""
    out = {}
    for b, count in enumerate(block_mask.kv_num_blocks[:, 0].tolist()):
        full = block_mask.full_kv_num_blocks[b, 0].tolist()
        for row, (c, f) in enumerate(zip(count, full)):
            out[b, row] = (sorted(block_mask.kv_indices[b, 0, row, :c].tolist()),
                           sorted(block_mask.full_kv_indices[b, 0, row, :f].tolist()))
    return out


def _assert_sound(got, want):
    """Every tile create_block_mask keeps is kept, and full only where create_block_mask's is full."""
    got, want = _tiles_of(got), _tiles_of(want)
    for key, (partial, full) in want.items():
        assert set(partial) | set(full) <= set(got[key][0]) | set(got[key][1])  # nothing visible is skipped
        assert set(got[key][1]) <= set(full)  # full only where every pair is visible


def _padding(b, m, scattered):
    key_mask = torch.ones(b, m, dtype=torch.bool)
    key_mask[0, : m // 3] = False  # left padding
    key_mask[1, m - m // 5 :] = False  # right padding
    if scattered:
        key_mask[2, ::7] = False
    return key_mask


@pytest.mark.parametrize("n, extra", [(1, 0), (127, 1), (300, 0), (513, 130)])
@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 200), (False, 100)])
@pytest.mark.parametrize("parts", ["docs", "padding", "both", "scattered padding"])
def test_tiled_block_mask_against_create_block_mask(n, extra, causal, window, parts):
    # packed documents numbered in order, or padding at either end without a window: the same tiles
    # as create_block_mask, from (b, n / 128, m / 128) summaries instead of the (b, n, m) grid. Parts
    # combined (documents and padding, padding and a window) may leave a tile partial where
    # create_block_mask finds no visible pair, never the reverse; the outputs are equal either way
    from torch.nn.attention.flex_attention import create_block_mask

    from posenc.attention.flex import tiled_block_mask

    m, b = n + extra, 3
    docs = _packed_docs(b, m, seed=n + extra) if parts in ("docs", "both") else None
    key_mask = _padding(b, m, parts == "scattered padding") if parts != "docs" else None
    spec = MaskSpec(causal=causal, window=window, key_mask=key_mask,
                    q_docs=None if docs is None else docs[:, m - n :], k_docs=docs)
    want = create_block_mask(spec.mask_mod(n, m), b, None, n, m, device="cpu")
    got = tiled_block_mask(spec, n, m, "cpu")
    if parts == "docs" or (parts == "padding" and window is None):
        assert torch.equal(got.to_dense(), want.to_dense())
        assert _tiles_of(got) == _tiles_of(want)
    else:
        _assert_sound(got, want)
    if n != 300:  # outputs at one size (each call costs a second or two)
        return
    q, k, v = qkv(b=b, h=1, n=n, m=m, d=8, seed=n)
    with torch.no_grad():
        out = flex_attention(q, k, v, mask=spec)
    seen = spec.dense(n, m, "cpu").any(-1, keepdim=True)  # rows with no visible key: zeros on flex
    want_out = eager_attention(q, k, v, mask=spec).masked_fill(~seen, 0.0)
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_tiled_block_mask_is_exact_for_ids_out_of_order(seed):
    # ids out of order or with gaps: a tile may stay partial where it has no visible pair (the mask is
    # then evaluated there), never skipped or full by mistake; outputs equal eager's
    from torch.nn.attention.flex_attention import create_block_mask

    from posenc.attention.flex import tiled_block_mask

    g = torch.Generator().manual_seed(seed)
    n = m = 384
    docs = torch.randint(0, 4, (2, m), generator=g) * 3
    docs[:, 128:256] = 5  # one tile of a single document
    spec = MaskSpec(causal=bool(seed % 2), q_docs=docs, k_docs=docs)
    got = tiled_block_mask(spec, n, m, "cpu")
    _assert_sound(got, create_block_mask(spec.mask_mod(n, m), 2, None, n, m, device="cpu"))
    if not spec.causal:
        assert got.full_kv_num_blocks[:, 0, 1].tolist() == [1, 1]  # the single-document tile is full
    q, k, v = qkv(b=2, h=1, n=n, d=8, seed=seed)
    with torch.no_grad():
        out = flex_attention(q, k, v, mask=spec)
    torch.testing.assert_close(out, eager_attention(q, k, v, mask=spec), atol=1e-5, rtol=1e-5)


def test_a_packed_mask_at_16k_tokens_is_built_from_tiles():
    # (b, 128, 128) tile summaries, where create_block_mask's grid would be 2 x 16384 x 16384 entries
    from posenc.attention.flex import tiled_block_mask

    docs = _packed_docs(2, 16384, seed=0)
    spec = MaskSpec(causal=True, key_mask=docs >= 0, q_docs=docs, k_docs=docs)
    got = tiled_block_mask(spec, 16384, 16384, "cpu")
    assert got.kv_indices.shape == (2, 1, 128, 128)
    assert got.kv_num_blocks.sum() > 0 and got.full_kv_num_blocks.sum() > 0


def test_tiled_block_mask_traces_in_one_graph_with_dynamic_lengths():
    # inside a caller's torch.compile (CUDA models) the mask is built in the graph, for any length
    from posenc.attention.flex import tiled_block_mask

    def counts(docs, key_mask):
        n = docs.shape[-1]
        spec = MaskSpec(causal=True, key_mask=key_mask, q_docs=docs, k_docs=docs)
        return tiled_block_mask(spec, n, n, "cpu").kv_num_blocks

    build = torch.compile(counts, fullgraph=True, dynamic=True)
    for n in (300, 700):
        docs, key_mask = (torch.arange(n) // 100).repeat(2, 1), torch.rand(2, n) > 0.1
        assert torch.equal(build(docs, key_mask), counts(docs, key_mask))


def test_banded_block_mask_refuses_data_masks():
    from posenc.attention.flex import banded_block_mask

    with pytest.raises(ValueError, match="tiled_block_mask"):
        banded_block_mask(MaskSpec(key_mask=torch.ones(1, 4, dtype=torch.bool)), 4, 4, "cpu")


def test_banded_block_mask_is_small_and_traces_in_one_graph():
    from posenc.attention.flex import banded_block_mask

    got = banded_block_mask(MaskSpec(causal=True, window=512), 16384, 16384, "cpu")
    assert got.kv_indices.numel() == 128 * 128  # (n / 128, m / 128) tiles, not an (n, m) grid
    build = torch.compile(lambda n: banded_block_mask(MaskSpec(causal=True), n, n, "cpu").kv_num_blocks, fullgraph=True)
    assert build(300).tolist() == [[[1, 1, 3]]]
