"""StyleGAN's constant input and the style-modulated stem: AdaIN formula, gradient to the constant, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import adain
from posenc.spatial import AdaIN, CartesianGridInput, ConstantInput, StyleGenerator


def reference_adain(x, scale, bias, eps=1e-8):
    b, c, _h, _w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        for ch in range(c):
            vals = [float(v) for v in x[n, ch].flatten()]
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / len(vals)
            out[n, ch] = float(scale[n, ch]) * (x[n, ch] - mean) / (var + eps) ** 0.5 + float(bias[n, ch])
    return out


def test_adain_matches_float64_reference():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    scale, bias = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(adain(x, scale, bias), reference_adain(x, scale, bias), rtol=1e-12, atol=1e-12)


@given(st.floats(0.5, 4.0), st.floats(-3.0, 3.0))
def test_adain_removes_the_input_statistics(gain, shift):
    # the defining property: the output statistics are the style's, whatever the input's were
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    ones = torch.ones(1, 2, dtype=torch.float64)
    a = adain(x, 2 * ones, ones)
    b = adain(x * gain + shift, 2 * ones, ones)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.mean(dim=(2, 3)), ones)


def test_constant_is_a_parameter_broadcast_over_the_batch_and_receives_gradient():
    gen = StyleGenerator(8, 8, 8, 1, input="constant_input", size=4, upsamples=1)
    const = gen.input
    assert isinstance(const, ConstantInput) and isinstance(const.weight, torch.nn.Parameter)
    out = const(3)
    assert out.shape == (3, 8, 4, 4)
    torch.testing.assert_close(out[0], out[2])
    gen(torch.randn(3, 8)).square().mean().backward()
    assert const.weight.grad is not None and const.weight.grad.abs().sum() > 0


def test_generator_output_size():
    gen = StyleGenerator(8, 8, 8, 3, input="constant_input", size=4, upsamples=2)
    assert gen(torch.randn(2, 8)).shape == (2, 3, 16, 16)


def test_generator_takes_an_explicit_input_module_in_place_of_the_constant():
    gen = StyleGenerator(8, 8, 8, 1, input=CartesianGridInput(4), upsamples=1, noise=False)
    assert gen(torch.randn(2, 8)).shape == (2, 1, 8, 8)
    assert list(gen.input.parameters()) == []  # nothing learned in the input


def test_meta_device_and_state_dict_round_trip():
    meta = ConstantInput(8, 4, device="meta")
    meta.to_empty(device="cpu")
    assert meta.weight.shape == (1, 8, 4, 4)
    a = StyleGenerator(8, 8, 8, 1, noise=False)
    b = StyleGenerator(8, 8, 8, 1, noise=False)
    b.load_state_dict(a.state_dict())
    z = torch.randn(2, 8)
    torch.testing.assert_close(a(z), b(z))


def test_registry_entry():
    info = get("constant_input")
    assert info.family == "spatial" and "1812.04948" in info.paper and info.cls is ConstantInput


def test_bad_input():
    with pytest.raises(ValueError, match="channels"):
        ConstantInput(0)
    with pytest.raises(ValueError, match="size"):
        ConstantInput(8, 4)(2, size=(8, 8))
    with pytest.raises(ValueError, match="batch"):
        ConstantInput(8, 4)(-1)
    with pytest.raises(ValueError, match="scale"):
        adain(torch.randn(2, 3, 4, 4), torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="x"):
        adain(torch.randn(2, 3, 4), torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="z"):
        StyleGenerator(8, 8, 8, 1)(torch.randn(2, 7))
    with pytest.raises(ValueError, match="input"):
        StyleGenerator(8, 8, 8, 1, input="coordconv")


@pytest.mark.parametrize(
    "kwargs,error",
    [({"out_channels": 0}, ValueError), ({"out_channels": -1}, ValueError), ({"out_channels": 2.5}, TypeError),
     ({"noise": "no"}, TypeError), ({"noise": 0}, TypeError)],
)
def test_generator_refuses_out_channels_and_noise_by_name(kwargs, error):
    # out_channels reached nn.Conv2d unchecked (a negative-dimension error, 0 an empty image) and
    # noise was read by truthiness ('no' added the noise inputs)
    with pytest.raises(error, match=f"`{next(iter(kwargs))}`"):
        StyleGenerator(z_dim=4, w_dim=4, channels=4, **kwargs)


@pytest.mark.parametrize(
    "kwargs,error",
    [({"channels": 0}, ValueError), ({"channels": -1}, ValueError), ({"channels": "3"}, TypeError),
     ({"w_dim": 0}, ValueError), ({"w_dim": 2.5}, TypeError)],
)
def test_adain_module_refuses_its_sizes_by_name(kwargs, error):
    # they reached nn.Linear unchecked: torch's negative-dimension or 'tuple of ints' errors, 0 an empty layer
    with pytest.raises(error, match=f"`{next(iter(kwargs))}`"):
        AdaIN(**{"channels": 4, "w_dim": 4, **kwargs})


def test_size_may_be_a_list_as_for_the_explicit_inputs():
    """[4, 4] was refused with '`size` must be (4, 4) ..., got [4, 4]'; the gan_encodings inputs take lists."""
    const = ConstantInput(8, 4)
    assert const(2, size=[4, 4]).shape == (2, 8, 4, 4)
    gen = StyleGenerator(8, 8, 8, 1, input="constant_input", size=4, upsamples=0)
    assert gen(torch.randn(2, 8), size=[4, 4]).shape == (2, 1, 4, 4)


def test_trains_from_the_constant():
    torch.manual_seed(0)
    z, target = torch.randn(4, 8), torch.rand(4, 1, 8, 8)
    gen = StyleGenerator(8, 8, 16, 1, input="constant_input", upsamples=1)
    losses = train_losses(gen, lambda: (z, target), F.mse_loss, steps=60, lr=1e-2)
    assert_loss_falls(losses, factor=0.5)


def test_batch_may_be_empty_and_a_tensor_needs_a_batch_axis():
    const = ConstantInput(8, 4)
    assert const(0).shape == const(torch.zeros(0, 3)).shape == (0, 8, 4, 4)  # an int 0 was refused
    with pytest.raises(ValueError, match="`batch` must be an int or a tensor whose first axis is the batch"):
        const(torch.tensor(2))  # was an IndexError from batch.shape[0]


def test_adain_materialised_from_meta_keeps_its_scale_bias_of_one():
    # the scale's bias 1 was set in __init__ only: materialize() gave it nn.Linear's random draw
    from posenc.core.meta import materialize
    from posenc.spatial.constant_input import AdaIN

    torch.manual_seed(3)
    normal = AdaIN(4, 6)
    with torch.device("meta"):
        meta = AdaIN(4, 6)
    torch.manual_seed(3)
    built = materialize(meta, "cpu")
    assert torch.equal(built.affine.bias[:4], torch.ones(4)) and torch.equal(built.affine.bias[4:], torch.zeros(4))
    for (name, want), (_, got) in zip(normal.named_parameters(), built.named_parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0, msg=name)


def test_an_unknown_input_name_is_refused_naming_input():
    # a name outside the registry was refused by the registry lookup as "unknown encoding 'foo' for `name`
    # ...; known encodings: alibi, ..." (an argument the generator does not have, and names it does not take)
    with pytest.raises(ValueError, match=r"^`input` must be 'constant_input', 'gan_multiscale' or a module, got 'foo'$"):
        StyleGenerator(8, 8, 8, 1, input="foo")


def test_adain_checks_its_sizes_and_style():
    # AdaIN(0, 8) and AdaIN(True, 8) were built, AdaIN(4.0, 8) failed inside nn.Linear, a style of another
    # width with 'mat1 and mat2 shapes cannot be multiplied (2x7 and 8x8)', a float64 style with
    # 'mat1 and mat2 must have the same dtype'
    from posenc.spatial import AdaIN

    with pytest.raises(ValueError, match="`channels` must be >= 1, got 0"):
        AdaIN(0, 8)
    with pytest.raises(TypeError, match="`channels` must be an int, got bool True"):
        AdaIN(True, 8)
    with pytest.raises(TypeError, match="`w_dim` must be an int, got float 8.0"):
        AdaIN(4, 8.0)
    with pytest.raises(ValueError, match="`channels`=1000000000000 needs"):
        AdaIN(10**12, 10**6)
    layer, x = AdaIN(4, 8), torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"`w` must have w_dim=8 features, got shape \(2, 7\)"):
        layer(x, torch.randn(2, 7))
    with pytest.raises(ValueError, match="`w` has dtype torch.float64 but AdaIN's parameters are torch.float32"):
        layer(x, torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="`w`"):
        layer(x, torch.randn(8))
    assert layer(x, torch.randn(2, 8)).shape == x.shape
