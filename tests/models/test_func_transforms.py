"""torch.func transforms and forward-mode AD over the reference Transformer, for every encoding it takes.

``attention="auto"`` runs the eager reference inside transforms (the fused kernels define a backward
only or read memory); ``torch.func.grad`` must equal autograd and ``jvp`` a central difference, in
float64.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jvp

from posenc.attention.dispatch import choose_backend
from posenc.core.registry import available, get
from posenc.models import Transformer
from posenc.testing.examples import build

NAMES = [info.name for info in available() if info.fits_transformer]
#: PyTorch's weight norm (torch.nn.utils.parametrizations) has no forward-mode derivative
NO_FORWARD_AD = {"wav2vec2_conv": "torch's _weight_norm_interface has no forward-mode AD formula"}


def _model(name: str) -> tuple[Transformer, torch.Tensor]:
    torch.manual_seed(0)
    causal = get(name).cls.supports_causal
    model = Transformer(32, 16, 1, 2, position=name, causal=causal).double()
    return model, torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(1))


def _loss(model, tokens):
    return lambda params: functional_call(model, params, (tokens,)).logsumexp(-1).mean()


@pytest.mark.parametrize("name", NAMES)
def test_grad_equals_autograd(name):
    model, tokens = _model(name)
    params = {k: v.detach() for k, v in model.named_parameters()}
    got = grad(_loss(model, tokens))(params)
    model(tokens).logsumexp(-1).mean().backward()
    for key, p in model.named_parameters():
        want = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(got[key], want, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_equals_a_central_difference(name):
    if name in NO_FORWARD_AD:
        pytest.skip(NO_FORWARD_AD[name])
    model, tokens = _model(name)
    loss = _loss(model, tokens)
    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    tangents = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
    _, got = jvp(loss, (params,), (tangents,))
    eps = 1e-6
    shifted = [loss({k: params[k] + s * eps * tangents[k] for k in params}) for s in (1, -1)]
    assert abs(got - (shifted[0] - shifted[1]) / (2 * eps)) < 1e-7


def test_auto_runs_the_eager_reference_inside_transforms():
    q = torch.randn(1, 2, 4, 8, dtype=torch.float64)
    alibi = build("alibi", heads=2)
    assert choose_backend("auto", q, alibi, 0.0, tensors=(q, q, q)) == "blocked"
    seen = []
    torch.func.vmap(lambda t: seen.append(choose_backend("auto", t, alibi, 0.0, tensors=(t, t, t))) or t)(q)
    assert seen == ["eager"]
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = fwAD.make_dual(q, torch.ones_like(q))
        assert choose_backend("auto", dual, alibi, 0.0, tensors=(dual, q, q)) == "eager"
    assert choose_backend("blocked", q, alibi, 0.0, tensors=(q, q, q)) == "blocked"  # an explicit choice stays
