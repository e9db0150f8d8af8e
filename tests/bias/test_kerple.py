"""KERPLE against a float64 transcription of eq. 5 (log and power kernels), its constraints and its relativity."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_float32_biases, assert_float64_attention_is_exact
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.bias import Kerple, kerple_bias
from posenc.core.positions import Positions


def reference(i: int, j: int, r1: float, r2: float, kernel: str, causal: bool) -> float:
    distance = max(i - j, 0) if causal else abs(i - j)
    return -r1 * math.log(1 + r2 * distance) if kernel == "log" else -r1 * distance**r2


@pytest.mark.parametrize("kernel", ["log", "power"])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_the_papers_kernel(kernel, causal):
    torch.manual_seed(0)
    module = Kerple(3, kernel=kernel, causal=causal)
    bias = module(6, 9, offset=3)  # queries at 3..8, keys at 0..8
    r1, r2 = (t.detach().double() for t in module.constrained())
    for h in range(3):
        for i in range(6):
            for j in range(9):
                expected = reference(i + 3, j, r1[h].item(), r2[h].item(), kernel, causal)
                assert bias[0, h, i, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_constraints_clamp_the_parameters():
    module = Kerple(2, kernel="power", eps=0.05)
    with torch.no_grad():
        module.r1.copy_(torch.tensor([-1.0, 3.0]))
        module.r2.copy_(torch.tensor([5.0, -2.0]))
    r1, r2 = module.constrained()
    assert r1.tolist() == pytest.approx([0.05, 3.0]) and r2.tolist() == pytest.approx([2.0, 0.05])
    assert (module(4) <= 0).all()  # a non-positive bias, decreasing with distance


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(0, 10_000), kernel=st.sampled_from(["log", "power"]))
def test_depends_only_on_the_offset(shift, kernel):
    torch.manual_seed(1)
    module = Kerple(2, kernel=kernel, causal=False)
    base = torch.arange(5)
    a = module(5, q_positions=base, k_positions=base)
    b = module(5, q_positions=base + shift, k_positions=base + shift)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, module(5))  # explicit = implicit


@pytest.mark.parametrize("kernel", ["log", "power"])
def test_kerple_bias_keeps_a_float64_r2(kernel):
    # only r1's dtype once chose the arithmetic: a float64 r2 beside a float32 r1 was rounded to float32
    distance = torch.arange(50.0)
    r1, r2 = torch.tensor([0.5, 1.5]), torch.tensor([0.1234567891234, 0.9876543219876], dtype=torch.float64)
    d = distance.double()[:, None]
    want = -r1.double() * (torch.log1p(r2 * d) if kernel == "log" else d**r2)
    got = kerple_bias(distance, r1, r2, kernel=kernel)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-13, rtol=0)


def test_gradients_reach_both_parameters():
    module = Kerple(2)
    module(6).sum().backward()
    assert module.r1.grad.abs().sum() > 0 and module.r2.grad.abs().sum() > 0
    r1 = torch.rand(2, dtype=torch.float64) + 0.5
    r2 = torch.rand(2, dtype=torch.float64) + 0.5
    d = torch.arange(5.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: kerple_bias(d, a, b, kernel="log"), (r1.requires_grad_(), r2.requires_grad_()), atol=1e-4, eps=1e-6)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="kernel"):
        Kerple(2, kernel="cosine")
    with pytest.raises(ValueError, match="eps"):
        Kerple(2, eps=0)
    with pytest.raises(ValueError, match="r1"):
        kerple_bias(torch.arange(3.0), torch.ones(2), torch.ones(3))


@pytest.mark.parametrize(
    ("kernel", "r1", "r2"),
    [
        ("log", [1.0, 1.0], [-0.5, 0.5]), ("log", [-1.0, 1.0], [0.5, 0.5]), ("power", [1.0, 1.0], [0.5, 3.0]),
        ("power", [0.0, 1.0], [1.0, 1.0]), ("log", [math.nan, 1.0], [0.5, 0.5]), ("log", [1.0, 1.0], [0.5, math.nan]),
        ("log", [math.inf, 1.0], [0.5, 0.5]), ("log", [1.0, 1.0], [math.inf, 0.5]), ("power", [math.nan, 1.0], [1.0, 1.0]),
        ("power", [1.0, 1.0], [math.nan, 1.0]), ("power", [math.inf, 1.0], [1.0, 1.0]),
    ],
)  # fmt: skip
def test_kerple_bias_refuses_parameters_outside_the_constraints(kernel, r1, r2):
    # they gave NaN (log kernel, r2 < 0: log1p(-0.5 * 3) = nan), a bias growing with distance (r1 < 0),
    # or a kernel that is not conditionally positive definite (power, r2 > 2), without a word; NaN
    # passed every comparison, and an infinite r1 or r2 gave NaN at distance 0 (inf * 0)
    with pytest.raises(ValueError, match=r"`r1` must be > 0 and `r2` .*\(KERPLE's constraints"):
        kerple_bias(torch.arange(4.0), torch.tensor(r1), torch.tensor(r2), kernel=kernel)


POSITIONS = {
    "implicit": Positions(6),
    "offset": Positions(6, offset=3),
    "explicit": Positions(6, explicit=torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])),
}


@pytest.mark.parametrize("kernel", ["log", "power"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_a_float64_model_attends_in_float64(positions, causal, kernel):
    """Every path in float64 for float64 parameters: the score_mod's closed-over (r1, r2) were
    rounded to float32 with implicit positions."""
    torch.manual_seed(0)
    assert_float64_attention_is_exact(Kerple(2, kernel=kernel, causal=causal), positions, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS.values(), ids=POSITIONS.keys())
def test_float32_and_half_models_keep_float32_biases(positions, dtype):
    assert_float32_biases(Kerple(2), positions, dtype)


@pytest.mark.parametrize("kernel", ["log", "power"])
def test_the_module_reads_no_parameter_values_on_the_host(monkeypatch, kernel):
    # Kerple.constrained() keeps r1, r2 inside the constraints: only the functional form checks them
    def no_host_reads(t):
        raise AssertionError("the module read its parameters' values on the host")

    monkeypatch.setattr("posenc.bias.kerple.can_read_values", no_host_reads)
    kerple = Kerple(heads=2, kernel=kernel)
    pos = Positions(5)
    q = torch.randn(1, 2, 5, 4)
    assert kerple.score_bias(q, q, q_positions=pos, k_positions=pos).shape[-2:] == (5, 5)


def test_repr_shows_the_clamp():
    assert "eps=0.1" in repr(Kerple(2, eps=0.1))
