"""``attention="auto"`` on CPU: compiled flex for inference of long enough query blocks whose
score_mod compiles, the blocked kernel for training, decoding steps and everything else."""

import warnings

import pytest
import torch

import posenc
from posenc.attention import MaskSpec, attend, dispatch
from posenc.attention import flex as flex_module
from posenc.core.positions import Positions
from posenc.models import Transformer
from posenc.testing.examples import build


@pytest.fixture
def calls(monkeypatch):
    """The kernels ``attend`` runs, recorded; PyTorch's unfused FlexAttention stands in for the
    compiled kernel (no compilation in unit tests) and FLEX_CPU_MIN_ROWS is lowered to 4 rows, so
    tiny blocks stand for long prompts."""
    from torch.nn.attention.flex_attention import flex_attention as unfused

    monkeypatch.setattr(flex_module, "_compiled", lambda: unfused)
    monkeypatch.setattr(dispatch, "FLEX_CPU_MIN_ROWS", 4)
    monkeypatch.setattr(flex_module, "CPU_MIN_HEAD_DIM", 4)  # the tiny heads stand for wide ones too
    seen = []
    for name in ("flex_attention", "blocked_attention", "sdpa_attention"):
        real = getattr(dispatch, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append(_name.removesuffix("_attention"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(dispatch, name, spy)
    return seen


def run(enc, *, n=6, m=None, grad=False, mask=None, explicit=False, dtype=torch.float32):
    m = n if m is None else m
    g = torch.Generator().manual_seed(n + m)
    q, k, v = (torch.randn(1, 2, x, 4, generator=g, dtype=dtype) for x in (n, m, m))
    qp, kp = Positions(n, offset=m - n), Positions(m)
    if explicit:
        qp, kp = Positions(n, explicit=torch.arange(m - n, m)[None] * 2), Positions(m, explicit=torch.arange(m)[None] * 2)
    mask = mask or MaskSpec(causal=True)
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        got = attend(q, k, v, position=enc, q_positions=qp, k_positions=kp, mask=mask, backend="auto")
        want = attend(q, k, v, position=enc, q_positions=qp, k_positions=kp, mask=mask, backend="eager")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def encoding(name, **kwargs):
    torch.manual_seed(0)
    enc = build(name, **kwargs)
    return enc.requires_grad_(False)


@pytest.mark.parametrize("name", ["alibi", "t5", "shaw", "kerple"])
def test_cpu_inference_of_a_prompt_runs_compiled_flex(calls, name):
    run(encoding(name, **({"values": False} if name == "shaw" else {"causal": True})))
    assert calls == ["flex"]


def test_everything_else_on_cpu_keeps_the_blocked_kernel(calls):
    alibi = encoding("alibi", causal=True)
    cases = {
        "training": {"grad": True},
        "a decoding step": {"n": 1, "m": 6},
        "a block shorter than FLEX_CPU_MIN_ROWS": {"n": 3},
        "explicit positions (score_mod not declared)": {"explicit": True},
        "padding mask": {"mask": MaskSpec(causal=True, key_mask=torch.ones(1, 6, dtype=torch.bool))},
    }
    for what, options in cases.items():
        calls.clear()
        run(alibi.requires_grad_(options.get("grad", False)), **options)
        assert calls == ["blocked"], what
    calls.clear()
    run(encoding("shaw"))  # a value term: FlexAttention has no place for it
    assert calls == ["blocked"]
    calls.clear()
    run(alibi.double(), dtype=torch.float64)  # inductor's CPU FlexAttention lowers no float64
    assert calls == ["blocked"]


def test_narrow_heads_on_cpu_keep_the_blocked_kernel(calls, monkeypatch):
    monkeypatch.setattr(flex_module, "CPU_MIN_HEAD_DIM", 32)  # the real bound: these heads have 4 features
    run(encoding("alibi", causal=True))
    assert calls == ["blocked"]


def test_inside_torch_compile_on_cpu_auto_avoids_flex_and_flex_is_refused(monkeypatch):
    from posenc.models import Transformer

    monkeypatch.setattr(dispatch, "FLEX_CPU_MIN_ROWS", 4)
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (1, 8))
    auto = Transformer(11, 64, 1, 2, position="alibi", causal=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(auto, fullgraph=True)(tokens), auto(tokens), atol=1e-5, rtol=1e-5)
    flex = Transformer(11, 64, 1, 2, position="alibi", causal=True, attention="flex").eval()
    with torch.no_grad(), pytest.raises(Exception, match="attention='flex' cannot run inside torch.compile on CPU"):
        torch.compile(flex, fullgraph=True)(tokens)


def test_encodings_without_score_terms_keep_sdpa(calls):
    run(encoding("rope"))
    assert calls == ["sdpa"]


def test_a_failing_compile_falls_back_to_the_blocked_kernel_with_one_warning(calls, monkeypatch):
    """Where the compiler stack fails (no C++ toolchain, an inductor error), ``auto`` warns once, runs
    the blocked kernel for that call and every later one, and gives the eager reference's output."""

    def broken():
        def fail(*args, **kwargs):
            raise RuntimeError("C++ compile error: no compiler found\nmore detail")

        return fail

    monkeypatch.setattr(flex_module, "_compiled", broken)
    monkeypatch.setattr(dispatch, "cpu_flex_failure", None)
    alibi = encoding("alibi", causal=True)
    with pytest.warns(RuntimeWarning, match="compiled FlexAttention failed on CPU .RuntimeError: C.. compile error: no compiler found.; attention='auto' uses the blocked kernel"):
        run(alibi)
    assert calls == ["flex", "blocked"] and dispatch.cpu_flex_failure.startswith("RuntimeError")
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no second warning
        run(alibi)
    assert calls == ["blocked"]


def test_every_entry_names_bad_inputs():
    """Shapes, dtypes and position counts are checked at every attention entry: none reaches a
    matmul (or, in SDPA, broadcasts into a wrong answer)."""
    from posenc.attention import attend, blocked_attention, eager_attention, flex_attention, sdpa_attention

    q, k, v = (torch.randn(2, 4, 8, 16) for _ in range(3))
    bad = {
        "rank": ((q[0], k[0], v[0]), "rank 4"),
        "width": ((q, k[..., :8], v), r"\(b, h, m, d\)"),
        "keys": ((q, k, v[:, :, :5]), r"\(b, h, m, dv\)"),
        "heads": ((q, k[:, :3], v[:, :3]), r"\(b, h, m, d\)"),
        "integer": ((q.long(), k.long(), v.long()), "floating-point"),
        "dtypes": ((q, k.double(), v), "one dtype"),
    }
    entries = {
        "eager": eager_attention,
        "sdpa": sdpa_attention,
        "flex": flex_attention,
        "blocked": blocked_attention,
    }
    for entry in entries.values():
        for args, said in bad.values():
            with pytest.raises(ValueError, match=said):
                entry(*args)
    for entry in ("eager", "sdpa"):
        with pytest.raises(ValueError, match="bias"):
            entries[entry](q, k, v, bias=torch.randn(3, 3))
    alibi = posenc.create("alibi", heads=4)
    for backend in ("auto", "eager", "sdpa", "flex", "blocked"):
        for args, said in bad.values():
            with pytest.raises(ValueError, match=said):
                attend(*args, position=alibi, q_positions=Positions(8), k_positions=Positions(8), backend=backend)
        with pytest.raises(ValueError, match="q_positions"):
            attend(q, k, v, position=alibi, q_positions=Positions(5), k_positions=Positions(8), backend=backend)
        with pytest.raises(ValueError, match="k_positions"):
            attend(q, k, v, position=alibi, q_positions=Positions(8), k_positions=Positions(9), backend=backend)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex", "blocked"])
@pytest.mark.parametrize("name", ["alibi", "t5", "shaw", "transformer_xl"])
def test_explicit_positions_that_do_not_fit_are_named(name, backend):
    # explicit positions of another batch, length or rank failed deep inside torch (an expand), were
    # refused as a `bias` the user never gave, or (blocked kernel) were read past their length
    enc = Transformer(30, 16, 1, 2, position=name, causal=True).position  # 2 heads of 8
    if backend in ("sdpa", "flex") and "value" in enc.hooks:
        pytest.skip("value term: refused by sdpa and flex")
    q = torch.randn(2, 2, 5, 8)
    for explicit in (torch.arange(5).expand(3, 5), torch.arange(6).expand(1, 6), torch.arange(5), torch.arange(5).view(1, 1, 5)):
        positions = Positions(5, 0, explicit)
        with pytest.raises(ValueError, match="q_positions.explicit"), torch.no_grad():
            attend(q, q, q, position=enc, q_positions=positions, k_positions=Positions(5), backend=backend)
        with pytest.raises(ValueError, match="k_positions.explicit"), torch.no_grad():
            attend(q, q, q, position=enc, q_positions=Positions(5), k_positions=positions, backend=backend)
    if backend == "flex":
        return  # flex with explicit positions that fit: tests/attention/test_backends.py
    fits = [Positions(5, 0, torch.arange(5).repeat(b, 1)) for b in (1, 2)]
    with torch.no_grad():
        attend(q, q, q, position=enc, q_positions=fits[0], k_positions=fits[1], backend=backend)


@pytest.mark.parametrize("name", ["t5", "kerple", "shaw", "transformer_xl"])
def test_float64_score_mod_terms_stay_float64_on_the_blocked_kernel(name):
    """Explicit positions reach the blocked kernel through the encoding's score_mod, which returns the
    score's dtype: a float64 call gets float64 terms and gradients, as on the eager path."""
    torch.manual_seed(0)
    enc = build(name, **({} if name in ("shaw", "transformer_xl") else {"causal": True})).double()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    positions = Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]))
    docs = torch.tensor([[0, 0, 0, 1, 1, 1], [0] * 6])
    mask = MaskSpec(causal=True, q_docs=docs, k_docs=docs)
    tensors = [q, k, v, *enc.parameters()]
    results = []
    for backend in ("eager", "blocked"):
        out = attend(q, k, v, position=enc, q_positions=positions, k_positions=positions, mask=mask, backend=backend)
        results.append((out, torch.autograd.grad(out.square().sum(), tensors)))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_attend_and_every_entry_name_a_bad_mask_backend_or_dropout():
    """A misspelt backend once ran the blocked kernel in silence, and a mask whose tensors did not fit
    (or a causal mask with more queries than keys) failed inside torch or gave a wrong answer."""
    from posenc.attention import blocked_attention, eager_attention, flex_attention, sdpa_attention

    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    alibi = posenc.create("alibi", heads=2)
    positions = {"q_positions": Positions(5), "k_positions": Positions(5)}
    for backend in ("FLEX", "fast", ""):
        with pytest.raises(ValueError, match="`backend` must be one of"):
            attend(q, k, v, position=alibi, backend=backend, **positions)
    with pytest.raises(TypeError, match="`position`"):
        attend(q, k, v, position=None, **positions)
    for dropout in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout"):
            attend(q, k, v, position=alibi, dropout=dropout, **positions)
    docs = torch.zeros(2, 5, dtype=torch.long)
    bad_masks = {
        "mask": torch.ones(5, 5, dtype=torch.bool),
        "key_mask": MaskSpec(key_mask=torch.ones(2, 4, dtype=torch.bool)),
        "key_mask.*float": MaskSpec(key_mask=torch.ones(2, 5)),
        "q_docs": MaskSpec(q_docs=docs.float(), k_docs=docs),
        "k_docs": MaskSpec(q_docs=docs, k_docs=docs[:, :3]),
        "n \\(5\\) must be at most m \\(3\\)": MaskSpec(causal=True),
    }
    entries = [
        lambda q, k, v, mask, fn=fn: fn(q, k, v, mask=mask)
        for fn in (eager_attention, sdpa_attention, flex_attention, blocked_attention)
    ]
    entries += [
        lambda q, k, v, mask, backend=backend: attend(
            q, k, v, position=alibi, q_positions=Positions(q.shape[-2]), k_positions=Positions(k.shape[-2]),
            mask=mask, backend=backend,
        )
        for backend in ("auto", "eager", "sdpa", "flex", "blocked")
    ]
    for entry in entries:
        for said, mask in bad_masks.items():
            keys = (k[..., :3, :], v[..., :3, :]) if said.startswith("n ") else (k, v)
            with pytest.raises((TypeError, ValueError), match=said):
                entry(q, *keys, mask)
            if said.startswith("n "):  # more queries than keys is fine without causal order or a window
                entry(q, *keys, MaskSpec())
    with pytest.raises(ValueError, match="`q_docs` and `k_docs`"):
        MaskSpec(q_docs=docs)


def test_rows_that_see_no_key_are_finite_and_send_q_and_k_nothing_on_every_backend():
    # as attend's docstring states: the output of a row that sees no key depends on the backend (70
    # rows make two row blocks on the blocked kernel; rows 0-65 are left padding under a causal mask)
    gen = torch.Generator().manual_seed(0)
    n = 70
    q0, k0, v0 = (torch.randn(1, 2, n, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    key_mask = torch.arange(n).unsqueeze(0) >= 66
    alibi = posenc.create("alibi", heads=2).double()
    mask = MaskSpec(causal=True, key_mask=key_mask)
    kw = {"position": alibi, "q_positions": Positions(n), "k_positions": Positions(n), "mask": mask}
    grad = torch.randn(1, 2, n, 4, dtype=torch.float64, generator=gen)
    results = {}
    for backend in ("eager", "sdpa", "blocked"):
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        out = attend(q, k, v, backend=backend, **kw)
        results[backend] = (out, *torch.autograd.grad(out, (q, k), grad))
        assert all(torch.isfinite(t).all() for t in results[backend])
        assert (results[backend][1][..., :66, :] == 0).all()  # no gradient to a blind row's query
    for backend in ("sdpa", "blocked"):
        for got, want in zip(results[backend][1:], results["eager"][1:]):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    mean = v0.mean(-2, keepdim=True).expand(1, 2, 66, 4)
    torch.testing.assert_close(results["eager"][0][..., :66, :], mean)
    torch.testing.assert_close(results["sdpa"][0][..., :66, :], mean)
    torch.testing.assert_close(results["blocked"][0][..., 64:66, :], mean[..., :2, :])  # its block reads every key
    with torch.no_grad():
        flex = attend(q0, k0, v0, backend="flex", **kw)
    assert (flex[..., :66, :] == 0).all()
    torch.testing.assert_close(flex[..., 66:, :], results["eager"][0][..., 66:, :].detach())
