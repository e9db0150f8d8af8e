"""Complex layers against their real-arithmetic expansions in float64."""

import math

import pytest
import torch

from posenc.complex import ComplexLinear, ComplexRMSNorm, ComplexSelfAttention, ComplexToReal, complex_attention, crelu


def _cplx(*shape):
    return torch.complex(torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64))


def test_linear_equals_real_expansion():
    lin = ComplexLinear(4, 3).double()
    z = _cplx(2, 5, 4)
    a, b = lin.weight_real, lin.weight_imag
    with torch.no_grad():
        lin.bias_real.normal_()
        lin.bias_imag.normal_()
        got = lin(z)
    x, y = z.real, z.imag
    want_re = x @ a.T - y @ b.T + lin.bias_real
    want_im = y @ a.T + x @ b.T + lin.bias_imag
    torch.testing.assert_close(got.real, want_re.detach())
    torch.testing.assert_close(got.imag, want_im.detach())


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_loop(causal):
    q, k, v = _cplx(1, 2, 3, 4), _cplx(1, 2, 5, 4), _cplx(1, 2, 5, 4)
    got = complex_attention(q, k, v, causal=causal)
    want = torch.zeros_like(got)
    for h in range(2):
        for i in range(3):
            qi, kj = q[0, h, i], k[0, h]
            # Re(q conj k) / sqrt(4), written out in real arithmetic
            logits = ((qi.real * kj.real + qi.imag * kj.imag).sum(-1) / 2.0).clone()
            if causal:
                logits[i + 2 + 1 :] = float("-inf")  # query i sits at key index i + m - n
            w = logits.softmax(0)
            want[0, h, i] = sum(w[j] * v[0, h, j] for j in range(5))
    torch.testing.assert_close(got, want)


def test_attention_logit_sees_the_phase_difference():
    # Re(q conj k) of two order embeddings depends on the phase difference only
    q = torch.polar(torch.ones(1, 1, 1, 4, dtype=torch.float64), torch.full((1, 1, 1, 4), 0.3, dtype=torch.float64))
    def at(phase: float) -> torch.Tensor:
        return q * torch.exp(torch.tensor(1j * phase, dtype=torch.complex128))

    logits = [(at(s) @ at(s + 0.5).conj().transpose(-1, -2)).real for s in (0.0, 1.0, 2.0)]
    torch.testing.assert_close(logits[0], logits[1])
    torch.testing.assert_close(logits[0], logits[2])
    assert math.isclose(float(logits[0]), 4 * math.cos(0.5), rel_tol=1e-9)


def test_self_attention_shape_and_causality():
    attn = ComplexSelfAttention(8, 2, causal=True).double()
    z = _cplx(2, 6, 8)
    out = attn(z)
    assert out.shape == (2, 6, 8) and out.is_complex()
    z2 = z.clone()
    z2[:, 4:] = _cplx(2, 2, 8)
    torch.testing.assert_close(attn(z2)[:, :4], out[:, :4])


def test_norm_keeps_phases_and_readout_shapes():
    z = _cplx(2, 3, 4)
    out = ComplexRMSNorm(4).double()(z)
    torch.testing.assert_close(out.angle(), z.angle())
    torch.testing.assert_close(out.abs().square().mean(-1), torch.ones(2, 3, dtype=torch.float64), atol=1e-4, rtol=1e-4)
    concat, mod = ComplexToReal("concat"), ComplexToReal("abs")
    assert concat(z).shape[-1] == concat.out_dim(4) == 8 and mod(z).shape[-1] == mod.out_dim(4) == 4
    torch.testing.assert_close(concat(z), torch.cat([z.real, z.imag], -1))
    torch.testing.assert_close(crelu(z), torch.complex(z.real.clamp(min=0), z.imag.clamp(min=0)))


def test_real_input_where_complex_is_needed():
    x = torch.randn(2, 3, 4)
    for layer in (ComplexLinear(4, 4), ComplexRMSNorm(4), ComplexToReal(), ComplexSelfAttention(4, 2)):
        with pytest.raises(ValueError, match="z"):
            layer(x)
    with pytest.raises(ValueError, match="q"):
        complex_attention(torch.randn(1, 1, 2, 4), _cplx(1, 1, 2, 4), _cplx(1, 1, 2, 4))
    with pytest.raises(ValueError, match="z"):
        ComplexLinear(3, 4)(_cplx(1, 2, 4).to(torch.complex64))
    with pytest.raises(ValueError, match="mode"):
        ComplexToReal("phase")
    with pytest.raises(ValueError, match="dim"):
        ComplexSelfAttention(6, 4)


def test_meta_device_and_state_dict():
    lin = ComplexLinear(4, 3, device="meta").to_empty(device="cpu")
    other = ComplexLinear(4, 3)
    other.load_state_dict(lin.state_dict())
    assert set(other.state_dict()) == {"weight_real", "weight_imag", "bias_real", "bias_imag"}


def test_attention_causal_must_be_true_or_false():
    with pytest.raises(TypeError, match="`causal` must be True or False"):
        ComplexSelfAttention(8, 2, causal="no")


def test_attention_refuses_inputs_that_do_not_fit_by_name():
    q, k, v = _cplx(1, 2, 3, 4), _cplx(1, 2, 5, 4), _cplx(1, 2, 5, 4)
    # more queries than keys under a causal call used to give NaN rows (every key masked)
    with pytest.raises(ValueError, match=r"n \(6\) must be at most m \(5\)"):
        complex_attention(_cplx(1, 2, 6, 4), k, v, causal=True)
    with pytest.raises(ValueError, match="one complex dtype"):
        complex_attention(q, k.to(torch.complex64), v)
    with pytest.raises(ValueError, match="must share b and h"):
        complex_attention(q, _cplx(1, 2, 5, 3), v)
    with pytest.raises(ValueError, match="must share b and h"):
        complex_attention(q, k, _cplx(1, 2, 4, 4))
    with pytest.raises(ValueError, match="`q` must have rank 4"):
        complex_attention(_cplx(2, 3, 4), k, v)
    with pytest.raises(ValueError, match="`mask` must be a bool tensor"):
        complex_attention(q, k, v, mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"broadcastable to \(b, h, n, m\) = \(1, 2, 3, 5\)"):
        complex_attention(q, k, v, mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="`causal` must be True or False"):
        complex_attention(q, k, v, causal=1)
    out = complex_attention(q, k, v, mask=torch.ones(3, 5, dtype=torch.bool))
    torch.testing.assert_close(out, complex_attention(q, k, v))


def test_self_attention_refuses_a_key_mask_or_input_that_does_not_fit_by_name():
    attn = ComplexSelfAttention(4, 2).double()
    z = _cplx(2, 5, 4)
    # a float mask used to fail at `~mask`, one of another length inside a view
    for mask in (torch.ones(2, 5), torch.ones(2, 4, dtype=torch.bool), torch.ones(5, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"`key_mask` must be a bool tensor of shape \(b, n\) = \(2, 5\)"):
            attn(z, key_mask=mask)
    with pytest.raises(ValueError, match="`z` must have rank 3"):
        attn(_cplx(5, 4))
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])
    assert torch.isfinite(torch.view_as_real(attn(z, key_mask=keep))).all()


def test_norm_refuses_another_width_by_name():
    # used to fail inside a broadcast ('The size of tensor a (3) must match the size of tensor b (4)')
    with pytest.raises(ValueError, match=r"`z` must have last dimension dim=4, got shape \(2, 5, 3\)"):
        ComplexRMSNorm(4)(_cplx(2, 5, 3))


def test_materialised_from_meta_equals_a_normal_build():
    # the complex layers drew their weights only in the constructor: posenc.core.meta.initialize had no
    # reset_parameters to call and left to_empty()'s memory in place (NaN outputs of the whole model)
    from posenc.complex.model import ComplexOrderTransformer
    from posenc.core.meta import initialize

    torch.manual_seed(0)
    normal = ComplexOrderTransformer(8, 8, 1, 2)
    meta = ComplexOrderTransformer(8, 8, 1, 2, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in meta.parameters():
            p.fill_(float("nan"))  # what uninitialised memory may hold
    torch.manual_seed(0)
    initialize(meta)
    for key, value in normal.state_dict().items():
        torch.testing.assert_close(meta.state_dict()[key], value, atol=0, rtol=0, msg=key)
