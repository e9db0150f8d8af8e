"""The forget-gate bias against a float64 double sum of log gates, its ALiBi limit, and cached decoding."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.bias import ForgettingGate, alibi_bias, forget_gate_bias
from posenc.core.positions import Positions
from posenc.models import Transformer

#: query and key positions of the float64 and dtype tests: from 0, from 3, and explicit (packed documents)
POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


def test_matches_the_sum_of_log_gates():
    torch.manual_seed(0)
    module = ForgettingGate(4, 2).double()
    k = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    bias = module(k, 4)  # the last 4 keys are the queries
    assert bias.dtype == torch.float64
    w, b = module.weight.detach(), module.bias.detach()
    for h in range(2):
        log_f = [math.log(1 / (1 + math.exp(-(float(k[0, h, t] @ w[h]) + float(b[h]))))) for t in range(6)]
        for i in range(4):
            qi = i + 2
            for j in range(qi + 1):
                assert bias[0, h, i, j].item() == pytest.approx(sum(log_f[j + 1 : qi + 1]), abs=1e-12)


def test_constant_gates_are_alibi():
    log_gates = torch.full((1, 2, 5), -0.5)
    log_gates[:, 1] = -0.25
    bias = forget_gate_bias(log_gates, 5)
    relative = (torch.arange(5)[None, :] - torch.arange(5)[:, None]).unsqueeze(0)
    expected = alibi_bias(relative, torch.tensor([0.5, 0.25]))  # ALiBi's m_h (j - i) with slopes -log f
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    torch.testing.assert_close(bias[..., causal], expected.expand(1, 2, 5, 5)[..., causal])


@pytest.mark.parametrize("causal", [True, False])
def test_positive_log_gates_are_refused(causal):
    # gate logits passed in place of their logsigmoid (a gate above 1) gave a bias that grows with
    # distance, the opposite of forgetting, without a word
    logits = torch.tensor([[[0.5, -1.0, 2.0, 0.25]]])
    with pytest.raises(ValueError, match=r"`log_gates` must be <= 0 .* maximum of 2"):
        forget_gate_bias(logits, 4, causal=causal)
    assert (forget_gate_bias(torch.nn.functional.logsigmoid(logits), 4, causal=causal).tril() <= 0).all()


@pytest.mark.parametrize("bad", [-math.inf, math.nan])
def test_nan_and_minus_inf_log_gates_are_refused(bad):
    # a gate of 0 (log -inf) or NaN passed the check and made the bias NaN from there on, even between
    # later keys whose gates are finite (-inf - -inf): entry (3, 2) of these gates is -0.3, not NaN
    log_gates = torch.tensor([[[-0.1, bad, -0.2, -0.3]]])
    with pytest.raises(ValueError, match=r"`log_gates` must be finite .* got NaN or -inf"):
        forget_gate_bias(log_gates, 4)


def test_in_the_transformer_cached_decoding_equals_a_full_pass():
    torch.manual_seed(0)
    model = Transformer(16, 16, 2, 2, position="fox", causal=True).eval()
    tokens = torch.randint(0, 16, (2, 7))
    full = model(tokens)
    cache = model.new_cache()
    steps = torch.cat([model(tokens[:, t : t + 1], cache=cache) for t in range(7)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_bad_input():
    with pytest.raises(TypeError, match="`k`"):
        ForgettingGate(4, 2)("keys")
    with pytest.raises(ValueError, match="`k`"):
        ForgettingGate(4, 2)(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match="`n`"):
        forget_gate_bias(torch.zeros(1, 1, 3), 4)


def test_encoder_form_is_symmetric_and_non_positive():
    log_gates = torch.log(torch.rand(1, 2, 6) * 0.5 + 0.4)
    bias = forget_gate_bias(log_gates, 6, causal=False)
    torch.testing.assert_close(bias, bias.transpose(-1, -2))
    assert (bias <= 0).all()
    causal = forget_gate_bias(log_gates, 6)
    lower = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(bias[..., lower], causal[..., lower])


@pytest.mark.parametrize("n", [7, 3])
def test_matches_x_transformers_data_dependent_alibi(n):
    """x-transformers' ``DataDependentAlibi`` (FoX's causal bias from log-sigmoid gates): the same
    differences of cumulative log gates on the visible keys, for the last n of 7 tokens as queries."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    torch.manual_seed(0)
    peer = xt.DataDependentAlibi(16, 3, causal=True).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    want = peer(x)[..., 7 - n :, :]  # (b, h, 7, 7) -> the last n query rows
    got = forget_gate_bias(peer.to_forget_gates(x), n)  # float64 log gates (b, h, 7), summed in float64
    visible = torch.ones(n, 7, dtype=torch.bool).tril(7 - n)
    torch.testing.assert_close(got[..., visible], want[..., visible], rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal):
    """The keys, the gate's weights and the cumulative sum were float32, so a float64 model's bias was
    rounded to float32 on every path (and gradcheck was weak); they now stay float64."""
    torch.manual_seed(0)
    assert_float64_attention_is_exact(ForgettingGate(4, 2, causal=causal), positions, causal=causal)


def test_float64_gates_sum_in_float64():
    log_gates = -torch.rand(2, 3, 7, dtype=torch.float64)
    cumulative = log_gates.cumsum(-1)
    want = cumulative[..., 2:].unsqueeze(-1) - cumulative.unsqueeze(-2)
    torch.testing.assert_close(forget_gate_bias(log_gates, 5), want, atol=1e-15, rtol=0)
    torch.testing.assert_close(forget_gate_bias(log_gates, 5, causal=False), -want.abs(), atol=1e-15, rtol=0)
    assert forget_gate_bias(log_gates.float(), 5).dtype == torch.float32
    assert forget_gate_bias(log_gates.to(torch.bfloat16), 5).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(ForgettingGate(4, 2), positions, dtype)


def test_bias_too_large_to_build_raises_with_its_size(monkeypatch):
    # the (b, h, n, m) bias used to reach the allocator (28.8 GB for 8 heads and 30,000 tokens)
    # with no check; the limit is lowered here so that the test allocates nothing large
    monkeypatch.setattr("posenc.core.memory.MAX_TABLE_BYTES", 2**19)
    fox = ForgettingGate(4, 2)
    k = torch.randn(1, 2, 300, 4)
    assert fox(k[:, :, :200]).shape == (1, 2, 200, 200)  # 320 KB
    with pytest.raises(ValueError, match=r"FoX bias \(batch=1, heads=2, n=300, m=300\) would need 703\.1 KiB.*MAX_TABLE_BYTES"):
        fox(k)


def test_the_module_reads_no_gate_values_on_the_host(monkeypatch):
    # its log gates are logsigmoid values, <= 0 by construction: only the functional form checks them
    # (a host read per call would synchronise a GPU in every layer of every step)
    def no_host_reads(t):
        raise AssertionError("the module read its gates' values on the host")

    monkeypatch.setattr("posenc.bias.fox.can_read_values", no_host_reads)
    fox = ForgettingGate(head_dim=4, heads=2)
    k = torch.randn(1, 2, 5, 4)
    assert fox(k).shape == (1, 2, 5, 5)
    pos = Positions(5)
    assert fox.score_bias(k, k, q_positions=pos, k_positions=pos).shape == (1, 2, 5, 5)


def test_repr_shows_causal():
    assert "causal=False" in repr(ForgettingGate(8, 2, causal=False))
