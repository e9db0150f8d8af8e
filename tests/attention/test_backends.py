"""Every backend gives the eager reference's outputs (and gradients), for every sequence encoding in
the registry; every encoding with score terms has a score_mod that FlexAttention runs (forward on
CPU)."""

import pytest
import torch

from posenc.attention import BACKENDS, MaskSpec, attend, eager_attention
from posenc.attention.flex import flex_attention
from posenc.core.positions import Positions
from posenc.experiments.common import sequence_encodings
from posenc.models import Transformer

SEQUENCE = sequence_encodings()
CAUSAL = sequence_encodings(causal=True)


@pytest.fixture(autouse=True)
def unfused_flex(monkeypatch):
    # PyTorch's reference of the same FlexAttention computation: no compilation in unit tests
    monkeypatch.setattr("posenc.attention.flex.COMPILE", False)


def model(name, *, causal, attention, window=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Transformer(50, 16, 2, 2, position=name, causal=causal, attention=attention, window=window, **kwargs)


def tokens(b=2, n=9, seed=1):
    return torch.randint(0, 50, (b, n), generator=torch.Generator().manual_seed(seed))


def refuses_value_term(name, backend, causal):
    """Whether ``backend`` was asked for explicitly and cannot run the encoding's value term."""
    return backend in ("flex", "sdpa") and "value" in _encoding(name, causal).hooks


def reference(name, causal, window=None, x=None, **kwargs):
    net = model(name, causal=causal, attention="eager", window=window)
    return net, net(tokens() if x is None else x, **kwargs)


@pytest.mark.parametrize("backend", ["sdpa", "blocked", "flex", "auto"])
@pytest.mark.parametrize("name", SEQUENCE)
def test_every_backend_equals_eager(name, backend):
    causal = name in CAUSAL
    if refuses_value_term(name, backend, causal):
        pytest.skip("value term: refused (test_value_terms_refuse_flex_and_sdpa)")
    ref_net, want = reference(name, causal)
    net = model(name, causal=causal, attention=backend)
    net.load_state_dict(ref_net.state_dict())
    with torch.no_grad():
        got = net(tokens())
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "blocked"])
@pytest.mark.parametrize("name", SEQUENCE)
def test_training_gradients_equal_eager(name, backend):
    causal = name in CAUSAL
    if refuses_value_term(name, backend, causal):
        pytest.skip("value term: refused (test_value_terms_refuse_flex_and_sdpa)")
    ref_net, want = reference(name, causal)
    want.square().mean().backward()
    net = model(name, causal=causal, attention=backend)
    net.load_state_dict(ref_net.state_dict())
    net(tokens()).square().mean().backward()
    for (key, p), q in zip(net.named_parameters(), ref_net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


def _encoding(name, causal):
    return model(name, causal=causal, attention="eager").position


@pytest.mark.parametrize("name", [n for n in SEQUENCE if "bias" in _encoding(n, n in CAUSAL).hooks])
@pytest.mark.parametrize("explicit", [False, True])
def test_score_mod_equals_score_bias(name, explicit):
    causal = name in CAUSAL
    enc = _encoding(name, causal)
    gen = torch.Generator().manual_seed(0)
    q, _, _ = (torch.randn(2, 2, 5, 8, generator=gen) for _ in range(3))
    k7, v7 = torch.randn(2, 2, 7, 8, generator=gen), torch.randn(2, 2, 7, 8, generator=gen)
    if explicit:
        qp = Positions(5, explicit=torch.tensor([[3, 4, 5, 6, 7], [0, 2, 4, 6, 8]]))
        kp = Positions(7, explicit=torch.tensor([[1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 4, 6, 8, 9]]))
    else:
        qp, kp = Positions(5, 2), Positions(7)
    mod = enc.score_mod(q, k7, q_positions=qp, k_positions=kp)
    assert mod is not None, f"{name} has score terms but no score_mod"
    bias = enc.score_bias(q, k7, q_positions=qp, k_positions=kp)
    # a causal encoding may leave the hidden (future) entries of its bias unspecified
    mask = MaskSpec(causal=causal)
    got = eager_attention(q, k7, v7, score_mod=mod, mask=mask)
    want = eager_attention(q, k7, v7, bias=bias, mask=mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        if "value" in enc.hooks:  # attention="flex" refuses the value term; the score terms run alone
            with pytest.raises(ValueError, match="attention='flex'"):
                attend(q, k7, v7, position=enc, q_positions=qp, k_positions=kp, mask=mask, backend="flex")
            flex = flex_attention(q, k7, v7, score_mod=mod, mask=mask)
        else:
            flex = attend(q, k7, v7, position=enc, q_positions=qp, k_positions=kp, mask=mask, backend="flex")
        full = eager_attention(q, k7, v7, bias=bias, mask=mask)
    torch.testing.assert_close(flex, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["none", "alibi", "t5", "shaw", "transformer_xl", "rope"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_equals_a_dense_window_mask(name, backend, causal):
    if causal and name not in CAUSAL:
        pytest.skip("encoder-only encoding")
    if refuses_value_term(name, backend, causal):
        pytest.skip("value term: refused (test_value_terms_refuse_flex_and_sdpa)")
    net = model(name, causal=causal, attention=backend, window=3)
    x = tokens(n=11)
    with torch.no_grad():
        got = net(x)
    # the reference: the eager path with the window written out as a key-by-key mask
    ref = model(name, causal=causal, attention="eager")
    ref.load_state_dict(net.state_dict())
    i = torch.arange(11)
    # causal: the last 3 keys up to the query; bidirectional: keys less than 3 away on either side
    inside = (i[None, :] > i[:, None] - 3) & ((i[None, :] <= i[:, None]) if causal else (i[None, :] < i[:, None] + 3))
    with torch.no_grad(), _dense_mask(inside):
        want = ref(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class _dense_mask:
    """Replace the model's mask by a fixed dense one (for the reference)."""

    def __init__(self, visible):
        self.visible = visible

    def __enter__(self):
        from posenc.attention import masks

        self.original = masks.MaskSpec.dense
        visible = self.visible

        def dense(spec, n, m, device):
            base = self.original(MaskSpec(key_mask=spec.key_mask, q_docs=spec.q_docs, k_docs=spec.k_docs), n, m, device)
            v = visible.view(1, 1, n, m)
            return v if base is None else base & v

        masks.MaskSpec.dense = dense

    def __exit__(self, *exc):
        from posenc.attention import masks

        masks.MaskSpec.dense = self.original


def test_window_is_checked():
    with pytest.raises(ValueError, match="window"):
        Transformer(50, 16, 1, 2, window=0)
    with pytest.raises(ValueError, match="attention"):
        Transformer(50, 16, 1, 2, attention="fast")
    from posenc.models.attention import Attention

    for window, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="window"):
            Attention(8, 2, causal=True, window=window)
    with pytest.raises(ValueError, match="multiple of `heads`"):
        Attention(10, 4)


def test_flex_refuses_cpu_training_with_a_clear_error():
    net = model("alibi", causal=True, attention="flex")
    with pytest.raises(ValueError, match="no backward on CPU"):
        net(tokens())


@pytest.mark.parametrize("name", [n for n in SEQUENCE if "bias" in _encoding(n, n in CAUSAL).hooks])
def test_packed_training_gradients_equal_eager(name):
    # explicit positions (restarting per document) reach the blocked kernel through score_mod
    causal = name in CAUSAL
    ref_net = model(name, causal=causal, attention="eager")
    net = model(name, causal=causal, attention="blocked")
    net.load_state_dict(ref_net.state_dict())
    ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 2, 2, 2, 2]])
    for m in (ref_net, net):
        m(tokens(), document_ids=ids).square().mean().backward()
    for (key, p), q in zip(net.named_parameters(), ref_net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("name", ["rel_bias_2d", "rope_2d", "vit_learned"])
@pytest.mark.parametrize("backend", ["sdpa", "blocked", "flex"])
def test_vit_backends_equal_eager(name, backend):
    from posenc.models import ViT

    torch.manual_seed(0)
    ref = ViT(8, 2, 3, dim=16, depth=1, heads=2, position=name, attention="eager")
    net = ViT(8, 2, 3, dim=16, depth=1, heads=2, position=name, attention=backend)
    net.load_state_dict(ref.state_dict())
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(net(images), ref(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["alibi", "shaw", "transformer_xl", "rope"])
def test_empty_sequence_works_on_every_backend(name, backend):
    if refuses_value_term(name, backend, True):
        pytest.skip("value term: refused (test_value_terms_refuse_flex_and_sdpa)")
    net = model(name, causal=True, attention=backend).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 50)


VALUE_TERMS = [n for n in SEQUENCE if "value" in _encoding(n, n in CAUSAL).hooks]


@pytest.mark.parametrize("backend", ["flex", "sdpa"])
@pytest.mark.parametrize("name", VALUE_TERMS)
def test_value_terms_refuse_flex_and_sdpa(name, backend):
    # asked for explicitly, flex and SDPA do not hand the value term to another kernel in silence
    causal = name in CAUSAL
    net = model(name, causal=causal, attention=backend).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=rf"attention='{backend}'.*value term.*'blocked', 'eager' or 'auto'"):
        net(tokens())


@pytest.mark.parametrize("name", VALUE_TERMS)
def test_auto_runs_value_terms_on_the_blocked_kernel(name, monkeypatch):
    causal = name in CAUSAL
    ref_net, want = reference(name, causal)
    net = model(name, causal=causal, attention="auto")
    net.load_state_dict(ref_net.state_dict())
    calls = []
    from posenc.attention import dispatch

    original = dispatch.blocked_attention
    monkeypatch.setattr(dispatch, "blocked_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        torch.testing.assert_close(net(tokens()), want.detach(), atol=1e-5, rtol=1e-5)
    assert calls


@pytest.mark.parametrize("position", ["alibi", "rope", "t5"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_models_with_masks_equal_eager(position, backend):
    """A float64 model with a padding mask or packed documents: the additive mask is formed in float64
    (a float32 one cannot hold float64's smallest value) and the bias is not rounded to float32."""
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (2, 6))
    padding = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]).bool()
    documents = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    model = Transformer(11, 8, 1, 2, position=position, causal=True, attention=backend).double().eval()
    eager = Transformer(11, 8, 1, 2, position=position, causal=True, attention="eager").double().eval()
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        got, want = model(tokens, key_padding_mask=padding), eager(tokens, key_padding_mask=padding)
        torch.testing.assert_close(got[padding], want[padding], rtol=0, atol=1e-12)
        torch.testing.assert_close(model(tokens, document_ids=documents), eager(tokens, document_ids=documents),
                                   rtol=0, atol=1e-12)
