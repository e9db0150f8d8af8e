"""``complex_order`` as the input encoding of the real reference Transformer."""

import cmath

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.checks import check_one
from posenc.complex import ComplexOrderEncoding
from posenc.core.positions import Positions
from posenc.core.registry import get
from posenc.models import Transformer


def test_formula_against_float64_loop():
    enc = ComplexOrderEncoding(6).double()
    x = torch.randn(1, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        got = enc(x, offset=2)
        r, w, t = enc.amplitude.weight @ x[0].T, enc.frequency.weight @ x[0].T, enc.phase.weight @ x[0].T  # (3, n)
    assert got.shape == (1, 4, 6)
    for n in range(4):
        for j in range(3):
            z = float(r[j, n]) * cmath.exp(1j * (float(w[j, n]) * (n + 2) + float(t[j, n])))
            assert abs(float(got[0, n, j]) - z.real) < 1e-10  # real parts first
            assert abs(float(got[0, n, 3 + j]) - z.imag) < 1e-10  # then imaginary parts


@pytest.mark.parametrize("frequency", ["word", "shared"])
def test_shift_multiplies_by_a_factor_of_k_only(frequency):
    enc = ComplexOrderEncoding(8, frequency=frequency)
    x = torch.randn(1, 1, 8).expand(1, 5, 8)  # one word at every slot
    with torch.no_grad():
        z = enc.complex_embedding(x, Positions(5, 0, torch.tensor([[0, 3, 7, 10, 14]])))[0]
    # positions 0 -> 3 and 7 -> 10 are both a shift by 3; 0 -> 7 and 3 -> 10 both by 7
    torch.testing.assert_close(z[1] * z[2], z[0] * z[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z[4] * z[1], z[2] * z[3], atol=1e-5, rtol=1e-5)  # 14 + 3 = 7 + 10
    # and the factor of a shift by k is exp(i omega k), from the word's frequency alone
    omega = enc.word_parameters(x)[1]
    omega = (omega[0, 0] if omega.ndim == 3 else omega).detach()
    torch.testing.assert_close(z[3], z[2] * torch.exp(1j * 3 * omega.double()).to(z.dtype), atol=1e-5, rtol=1e-5)


def test_gradients_reach_amplitude_frequency_phase():
    enc = ComplexOrderEncoding(8, phase="shared")
    enc(torch.randn(2, 5, 8)).square().sum().backward()
    for part in (enc.amplitude.weight, enc.frequency.weight, enc.phase):
        assert part.grad is not None and part.grad.abs().sum() > 0


def test_registered_and_in_the_transformer():
    assert get("complex_order").family == "complex"
    model = Transformer(10, 16, 1, 2, position="complex_order", phase="shared")
    assert isinstance(model.position, ComplexOrderEncoding) and model.position.phase_sharing == "shared"
    assert model(torch.randint(0, 10, (2, 5))).shape == (2, 5, 10)


def test_explicit_positions_equal_implicit():
    enc = ComplexOrderEncoding(6)
    x = torch.randn(2, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, offset=5), enc(x, positions=torch.arange(5, 9).expand(2, 4)))


def test_cached_decoding_equals_full_pass():
    result = check_one("complex_order")
    assert result.ok and "skipped" not in result.detail, result.detail


def test_trains_in_the_reference_transformer():
    torch.manual_seed(0)
    model = Transformer(8, 32, 1, 2, position="complex_order")

    def batch():
        x = torch.randint(0, 8, (16, 10))
        return x, torch.roll(x, 1, dims=1)

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=100)
    assert_loss_falls(losses, factor=0.7)


def test_meta_device_and_state_dict():
    enc = ComplexOrderEncoding(8, frequency="shared", device="meta").to_empty(device="cpu")
    other = ComplexOrderEncoding(8, frequency="shared")
    other.load_state_dict(enc.state_dict())
    assert set(other.state_dict()) == {"amplitude.weight", "frequency", "phase.weight"}


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        ComplexOrderEncoding(7)
    with pytest.raises(ValueError, match="frequency"):
        ComplexOrderEncoding(8, frequency="fixed")
    enc = ComplexOrderEncoding(8)
    with pytest.raises(ValueError, match="x"):
        enc(torch.randn(1, 3, 8, dtype=torch.complex64))  # complex input where real is needed
    with pytest.raises(ValueError, match="x"):
        enc(torch.randn(1, 3, 6))


def test_autocast_keeps_the_angles_of_distant_positions():
    # inside torch.autocast(bfloat16) the per-word frequency came out of its linear map rounded to bf16,
    # and omega * p with it: at positions 3000..3004 the features were off by 1.8 (of values up to 1.2)
    torch.manual_seed(0)
    module = ComplexOrderEncoding(8)
    x, p = torch.randn(2, 5, 8), torch.arange(3000, 3005)
    want = module(x, positions=p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = module(x, positions=p)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)
