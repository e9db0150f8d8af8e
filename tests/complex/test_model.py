"""The small complex-valued Transformer: it trains, and gradients reach every embedding table."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.complex import ComplexLinear, ComplexOrderTransformer


def _previous_token_batch():
    x = torch.randint(0, 8, (16, 10))
    return x, torch.roll(x, 1, dims=1)


@pytest.mark.parametrize("frequency", ["word", "shared"])
def test_trains_on_a_task_that_needs_order(frequency):
    torch.manual_seed(0)
    model = ComplexOrderTransformer(8, 16, 1, 2, frequency=frequency)
    losses = train_losses(
        model, _previous_token_batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=80, lr=1e-2
    )
    assert_loss_falls(losses, factor=0.7)


def test_gradients_reach_amplitude_frequency_phase():
    model = ComplexOrderTransformer(8, 8, 1, 2, out_dim=3, readout="abs")
    x, _ = _previous_token_batch()
    model(x).square().mean().backward()
    for name in ("amplitude", "frequency", "phase"):
        grad = getattr(model.embed, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_shapes_positions_and_causality():
    model = ComplexOrderTransformer(8, 8, 2, 2, out_dim=5, causal=True).eval()
    x = torch.randint(0, 8, (2, 6))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 6, 5) and out.dtype == torch.float32
        torch.testing.assert_close(model(x, positions=torch.arange(6)), out)
        y = x.clone()
        y[:, 4:] = (y[:, 4:] + 1) % 8
        torch.testing.assert_close(model(y)[:, :4], out[:, :4])


def test_meta_device_and_state_dict():
    model = ComplexOrderTransformer(8, 8, 1, 2, device="meta").to_empty(device="cpu")
    other = ComplexOrderTransformer(8, 8, 1, 2)
    other.load_state_dict(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value) or value.isnan().any()


def test_sizes_past_memory_raise_naming_the_argument():
    # the complex layers used to reach the allocator instead of raising
    with pytest.raises(ValueError, match="`dim`.*more than"):
        ComplexOrderTransformer(16, 10**6, 1, 1)
    with pytest.raises(ValueError, match="`vocab_size`.*more than"):
        ComplexOrderTransformer(10**7, 10**6, 1, 1)
    with pytest.raises(ValueError, match="`in_features`.*more than"):
        ComplexLinear(10**7, 10**6)


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        ComplexOrderTransformer(8, 6, 1, 4)
    with pytest.raises(ValueError, match="readout|mode"):
        ComplexOrderTransformer(8, 8, 1, 2, readout="phase")
    with pytest.raises(ValueError, match="depth"):
        ComplexOrderTransformer(8, 8, 0, 2)
    # a negative ratio used to build a one-unit MLP silently, a string or NaN to fail inside int()
    for ratio in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="mlp_ratio"):
            ComplexOrderTransformer(8, 8, 1, 2, mlp_ratio=ratio)
    with pytest.raises(TypeError, match="mlp_ratio"):
        ComplexOrderTransformer(8, 8, 1, 2, mlp_ratio="2")


def test_key_padding_mask_that_does_not_fit_is_refused_by_name():
    model = ComplexOrderTransformer(8, 8, 1, 2)
    tokens = torch.randint(0, 8, (2, 5), generator=torch.Generator().manual_seed(0))
    # a float mask used to fail at `~mask`, one of another length inside a view
    for mask in (torch.ones(2, 5), torch.ones(2, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"`key_padding_mask` must be a bool tensor of shape \(b, n\) = \(2, 5\)"):
            model(tokens, key_padding_mask=mask)


def test_bfloat16_parameters_run_in_complex64():
    # torch has no complex bfloat16: a bf16 model used to fail in ComplexLinear
    # ('Expected both inputs to be Half, Float or Double tensors but got BFloat16 and BFloat16')
    torch.manual_seed(0)
    model = ComplexOrderTransformer(8, 8, 1, 2, dtype=torch.bfloat16)
    tokens = torch.randint(0, 8, (2, 5), generator=torch.Generator().manual_seed(0))
    out = model(tokens)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 5, 8) and torch.isfinite(out).all()
    reference = model.float()(tokens)  # the same weights in float32
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)
    lin = ComplexLinear(4, 3, dtype=torch.bfloat16)
    z = torch.randn(2, 4, dtype=torch.complex64)
    want = z @ torch.complex(lin.weight_real.float(), lin.weight_imag.float()).T
    torch.testing.assert_close(lin(z), want.detach())
