"""Permutation equivariance: known answers on the reference Transformer and on simple modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posenc.analysis import patch_permutation_deviation, permutation_deviation
from posenc.models import Transformer


def _encoder(position: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(16, 32, 2, 4, position=position).eval()


def test_nope_encoder_is_equivariant():
    tokens = torch.randint(0, 16, (2, 10))
    assert permutation_deviation(_encoder("none"), tokens, trials=3) < 1e-5


def test_sinusoidal_encoder_is_not_equivariant():
    tokens = torch.randint(0, 16, (2, 10))
    assert permutation_deviation(_encoder("sinusoidal"), tokens, trials=3) > 1e-2


def test_float_input_and_other_axis():
    # a per-token MLP is equivariant along the token axis; a cumulative sum is not
    mlp = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    x = torch.randn(3, 7, 4)
    assert permutation_deviation(mlp, x) < 1e-6
    assert permutation_deviation(lambda t: t.cumsum(1), x) > 1e-2
    # permuting along the batch axis (dim=0) leaves a per-sample function equivariant
    assert permutation_deviation(lambda t: t.cumsum(1), x, dim=0) < 1e-6


def test_invariant_pooling():
    x = torch.randn(2, 9, 3)
    assert permutation_deviation(lambda t: t.mean(1), x, invariant=True) < 1e-6
    assert permutation_deviation(lambda t: t[:, 0], x, invariant=True) > 1e-3


def test_patch_shuffle_feature_map():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    pointwise = nn.Conv2d(3, 5, 1)
    assert patch_permutation_deviation(pointwise, images, patch_size=4) < 1e-6
    conv = nn.Conv2d(3, 5, 3, padding=1)  # mixes neighbouring patches
    assert patch_permutation_deviation(conv, images, patch_size=4) > 1e-3


def test_patch_shuffle_tokens_with_class_token():
    def tokens(images: torch.Tensor) -> torch.Tensor:
        # (b, c, 16, 16) -> (b, 1 + 16, c * 16): a class token then patch tokens
        b, _c = images.shape[:2]
        patches = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(b, 16, -1)
        return torch.cat([patches.mean(1, keepdim=True), patches], dim=1)

    images = torch.randn(1, 2, 16, 16)
    assert patch_permutation_deviation(tokens, images, patch_size=4) < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        permutation_deviation(nn.Identity(), torch.randn(2, 3), dim=5)
    with pytest.raises(ValueError, match="invariant"):
        permutation_deviation(lambda t: t.sum(1), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="trials"):
        permutation_deviation(nn.Identity(), torch.randn(2, 3), trials=0)
    with pytest.raises(ValueError, match="patch_size"):
        patch_permutation_deviation(nn.Identity(), torch.randn(1, 1, 10, 10), patch_size=3)
    with pytest.raises(ValueError, match="images"):
        patch_permutation_deviation(nn.Identity(), torch.randn(1, 10, 10), patch_size=2)
    with pytest.raises(TypeError, match="x"):
        permutation_deviation(nn.Identity(), [1, 2, 3])


def test_nan_and_empty_input_raise_instead_of_reading_as_equivariant():
    # max() passes over NaN: a NaN deviation used to come back as 0.0, "equivariant"
    x = torch.randn(2, 5, 4)
    x[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="`x` must be finite"):
        permutation_deviation(nn.Identity(), x)
    with pytest.raises(ValueError, match="`module` returned NaN"):
        permutation_deviation(lambda t: t * float("nan"), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="`images` must be finite"):
        patch_permutation_deviation(nn.Identity(), torch.full((1, 3, 8, 8), float("nan")), patch_size=4)
    with pytest.raises(ValueError, match="`module` returned NaN"):
        patch_permutation_deviation(lambda t: t / 0.0 * 0.0, torch.randn(1, 3, 8, 8), patch_size=4)
    with pytest.raises(ValueError, match="at least 2 entries"):
        permutation_deviation(nn.Identity(), torch.randn(2, 0, 4))
    with pytest.raises(ValueError, match="nothing to shuffle"):
        patch_permutation_deviation(nn.Identity(), torch.randn(1, 3, 4, 4), patch_size=4)


def test_complex_output_is_compared_with_its_imaginary_part():
    # the imaginary part used to be dropped (.double() of a complex tensor): an order-aware imaginary
    # part read as equivariant (0.0), and NaN there passed the finiteness check
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert permutation_deviation(lambda t: torch.complex(t, t.cumsum(1)), x) > 0.1
    assert permutation_deviation(lambda t: torch.complex(t, 2 * t), x) < 1e-12
    with pytest.raises(ValueError, match="NaN or inf"):
        permutation_deviation(lambda t: torch.complex(t, torch.full_like(t, float("nan"))), x)


def test_invariant_must_be_a_bool():
    # invariant='no' is truthy: the outputs were compared unpermuted, and a bidirectional model without
    # an encoding (equivariant, deviation ~1e-7) measured 2.09, an order-aware verdict
    model = Transformer(11, 16, 1, 2, position="none").eval()
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="`invariant` must be True or False, got str 'no'"):
        permutation_deviation(model, tokens, invariant="no")
    with pytest.raises(TypeError, match="`invariant` must be True or False, got str 'no'"):
        patch_permutation_deviation(lambda z: z, torch.rand(1, 3, 8, 8), patch_size=4, invariant="no")
    assert permutation_deviation(model, tokens, invariant=False) < 1e-5


def test_seed_and_dim_are_checked_by_name():
    # a str seed failed in torch ('manual_seed expected a long, but got str'), a str dim in a comparison
    # ("'<=' not supported between instances of 'int' and 'str'")
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    model = Transformer(11, 16, 1, 2, position="none").eval()
    with pytest.raises(TypeError, match="`seed` must be an int, got str '0'"):
        permutation_deviation(model, tokens, seed="0")
    with pytest.raises(TypeError, match="`dim` must be an int, got str '1'"):
        permutation_deviation(model, tokens, dim="1")
    with pytest.raises(TypeError, match="`seed` must be an int, got float 1.5"):
        patch_permutation_deviation(lambda z: z, torch.rand(1, 3, 8, 8), patch_size=4, seed=1.5)


def test_an_empty_output_is_refused_with_a_message():
    # a batch of 0 (or an output of width 0) failed in torch: 'max(): Expected reduction dim to be
    # specified for input.numel() == 0'
    model = Transformer(11, 16, 1, 2, position="none").eval()
    with pytest.raises(ValueError, match=r"the output of `module` for `x` of shape \(0, 5\) is empty"):
        permutation_deviation(model, torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"is empty, of shape \(2, 5, 0\): nothing to compare"):
        permutation_deviation(lambda x: x[..., :0], torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"the output of `module` for `images` of shape \(0, 3, 8, 8\) is empty"):
        patch_permutation_deviation(lambda z: z, torch.rand(0, 3, 8, 8), patch_size=4)
