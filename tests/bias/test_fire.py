"""FIRE against a float64 transcription of eq. 5-6: an MLP of psi(i - j) / psi(max(L, i))."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact

from posenc.attention import MaskSpec, attend
from posenc.bench.timing import peak_memory_bytes
from posenc.bias import FIRE, fire_input
from posenc.core.positions import Positions

#: query and key positions of the float64 and dtype tests: from 0, from 3, and explicit (packed documents)
POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


def test_matches_the_formula_pair_by_pair():
    torch.manual_seed(0)
    module = FIRE(2, hidden=8, init_c=0.3, init_threshold=4.0).double()
    bias = module(5, 9, offset=4)
    assert bias.dtype == torch.float64
    lin1, lin2 = module.mlp[0], module.mlp[2]
    c = module.c.item()  # 0.3 as the float32 parameter held it before the cast
    psi = lambda x: math.log(c * x + 1)
    for i in range(5):
        for j in range(9):
            qi = i + 4
            x = psi(max(qi - j, 0)) / psi(max(4.0, qi))
            h = lin2(torch.relu(lin1(torch.tensor([x], dtype=torch.float64))))
            torch.testing.assert_close(bias[0, :, i, j], h, atol=1e-12, rtol=0)


def test_progressive_interpolation_maps_every_past_into_the_unit_interval():
    c, threshold = torch.tensor(0.1), torch.tensor(8.0)
    i = torch.arange(0, 5000.0)[:, None]
    j = torch.arange(0, 5000.0, 97)[None, :]
    x = fire_input((i - j).clamp(min=0), i, c, threshold)
    assert x.min() >= 0 and x.max() <= 1 + 1e-6
    # the farthest key of any query past the threshold maps to exactly 1
    assert fire_input(torch.tensor([[1000.0]]), torch.tensor([[1000.0]]), c, threshold).item() == pytest.approx(1.0)


def test_fire_input_computes_in_float32_or_better():
    """Integer distances with a bf16 model's c and threshold were computed in bf16 (errors of 0.03 on inputs
    in [0, 1]); a float64 c beside float32 distances was dropped to float32. The arithmetic dtype now rules."""
    i = torch.arange(300)[:, None]
    distance = (i - torch.arange(300)[None, :]).clamp(min=0)
    c, threshold = torch.tensor(0.7, dtype=torch.bfloat16), torch.tensor(3.0, dtype=torch.bfloat16)
    want = torch.log1p(c.double() * distance) / torch.log1p(c.double() * torch.maximum(threshold.double(), i.double()))
    got = fire_input(distance, i, c, threshold)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)
    got = fire_input(distance.float(), i.float(), c.double(), threshold.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_c_and_threshold_learn():
    module = FIRE(2, hidden=8, init_threshold=2.0)
    module(6).sum().backward()
    assert module.c.grad is not None and module.c.grad != 0
    assert module.threshold.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="init_c"):
        FIRE(2, init_c=0)
    with pytest.raises(ValueError, match="init_threshold"):
        FIRE(2, init_threshold=-1)


@pytest.mark.parametrize("name", ["c", "threshold"])
@pytest.mark.parametrize("shape", [(4,), (2,), (1, 1)])
def test_fire_input_takes_one_c_and_one_threshold(name, shape):
    # a (4,) c broadcast silently along the keys (each key its own c), a (2,) one failed in torch's
    # broadcasting without naming an argument, a (1, 1) one added a dimension to the result
    args = {"c": torch.tensor(0.1), "threshold": torch.tensor(3.0)} | {name: torch.full(shape, 0.5)}
    with pytest.raises(ValueError, match=rf"`{name}` must have rank 0"):
        fire_input(torch.arange(4.0).view(1, 4), torch.full((1, 1), 3.0), **args)


@pytest.mark.parametrize("name", ["c", "threshold"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_fire_input_refuses_a_c_or_threshold_that_is_not_finite(name, value):
    # a NaN c or threshold gave a NaN input, an infinite c NaN at distance 0 (inf * 0) and an infinite
    # threshold an input of 0 at every distance, without a word
    args = {"c": torch.tensor(0.1), "threshold": torch.tensor(3.0)} | {name: torch.tensor(value)}
    with pytest.raises(ValueError, match=rf"`{name}` must be finite"):
        fire_input(torch.arange(4.0).view(1, 4), torch.full((1, 1), 3.0), **args)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal):
    """The positions, c, the threshold and the MLP's output were float32, so a float64 model's blocked
    and eager paths agreed only to about 1e-7 (and gradcheck was weak); they now stay float64."""
    torch.manual_seed(0)
    module = FIRE(2, hidden=8, init_c=0.3, init_threshold=4.0, causal=causal)
    assert_float64_attention_is_exact(module, positions, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(FIRE(2, hidden=8), positions, dtype)


def test_activations_too_large_to_build_raise_with_their_size(monkeypatch):
    # the MLP's hidden layer has one row per query-key pair: FIRE(2)(20000) used to reach the
    # allocator (51 GB) past every check, since the (n, m) offsets themselves fit
    monkeypatch.setattr("posenc.core.memory.MAX_TABLE_BYTES", 2**20)
    fire = FIRE(2, hidden=32)
    assert fire(90).shape == (1, 2, 90, 90)  # 90 * 90 * 32 * 4 bytes: within 1 MiB
    with pytest.raises(ValueError, match=r"FIRE MLP's activations \(batch=1, n=200, m=200, hidden=32, heads=2\) would need 4\.9 MiB"):
        fire(200)
    with pytest.raises(ValueError, match=r"batch=3, n=200, m=200.*MAX_TABLE_BYTES"):
        fire(200, q_positions=torch.arange(600).view(3, 200), k_positions=torch.arange(200))


@pytest.mark.parametrize("causal", [True, False])
def test_blocked_kernel_matches_eager_with_gradients(causal):
    torch.manual_seed(0)
    enc = FIRE(2, hidden=8, causal=causal, init_threshold=4.0).double()
    q, k, v = (torch.randn(2, 2, 37, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for pos in (Positions(37, offset=3), Positions(37, explicit=torch.randint(0, 50, (2, 37)))):
        results = []
        for backend in ("eager", "blocked"):
            out = attend(q, k, v, position=enc, q_positions=pos, k_positions=pos, mask=MaskSpec(causal=causal), backend=backend)
            results.append((out, *torch.autograd.grad(out.square().sum(), [q, k, *enc.parameters()])))
        for want, got in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_blocked_kernel_memory_grows_linearly_without_gradients():
    # the MLP runs per block: a 4x longer sequence needs about 4x the memory, not the 16x of (n, m, hidden)
    torch.manual_seed(0)
    enc = FIRE(1, hidden=4, causal=False)
    peaks = []
    for n in (256, 1024):
        q = torch.randn(1, 1, n, 4)

        def call(q=q, n=n):
            with torch.no_grad():
                attend(q, q, q, position=enc, q_positions=Positions(n), k_positions=Positions(n), backend="blocked")

        peaks.append(peak_memory_bytes(call))
    assert peaks[1] < 6 * peaks[0], peaks
