"""The reference CNN: spatial encodings through ``position=`` by role, any map size, errors, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.models import CNN
from posenc.models.cnn import cnn_encodings
from posenc.spatial import CoordConv, HANet, SinCos2d


def test_names_acting_on_feature_maps():
    assert set(cnn_encodings()) == {"none", "coordconv", "sincos_2d", "hanet"}


@pytest.mark.parametrize("position", ["none", "coordconv", "sincos_2d", "hanet"])
@pytest.mark.parametrize("h, w", [(7, 9), (16, 4)])
def test_output_keeps_the_map_size(position, h, w):
    model = CNN(3, 5, width=8, position=position)
    assert model(torch.randn(2, 3, h, w)).shape == (2, 5, h, w)


def test_roles_and_kwargs():
    model = CNN(3, 2, width=8, position="sincos_2d", combine="concat")
    assert model.role == "features" and model.body[0].in_channels == 16
    model = CNN(3, 2, width=8, position="coordconv", with_r=True)
    assert model.role == "stem" and model.stem.conv.in_channels == 6
    model = CNN(3, 2, width=8, position=HANet(8, rows=4))
    assert model.role == "attention"
    assert CNN(1, 1, width=8, depth=0, position=SinCos2d(8, combine="concat"))(torch.randn(1, 1, 5, 5)).shape == (1, 1, 5, 5)


def test_position_changes_the_output_of_a_content_free_input():
    torch.manual_seed(0)
    plain = CNN(1, 1, width=8, depth=0, position="none")
    coord = CNN(1, 1, width=8, depth=0, position="coordconv")
    x = torch.zeros(1, 1, 9, 9)
    # without position a constant input gives a constant interior; coordinates make it vary
    assert plain(x)[0, 0, 2:-2, 2:-2].std() < 1e-6
    assert coord(x)[0, 0, 2:-2, 2:-2].std() > 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="position"):
        CNN(3, 2, position="spatial_broadcast")
    with pytest.raises(ValueError, match="name"):
        CNN(3, 2, position="no_such_encoding")
    with pytest.raises(TypeError, match="position"):
        CNN(3, 2, position=torch.nn.Identity())
    with pytest.raises(ValueError, match="in_channels"):
        CNN(3, 2)(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="x"):
        CNN(3, 2)(torch.randn(3, 5, 5))
    with pytest.raises(ValueError, match="width"):
        CNN(3, 2, width=0)


@pytest.mark.parametrize(
    "position,match",
    [
        (lambda: CoordConv(2, 16, 3, padding=1), "must take the images' in_channels=3 channels, got 2"),
        (lambda: HANet(16, 8), "must map width=16 channels to width=16, got in_channels=16 and out_channels=8"),
        (lambda: HANet(8), "must map width=16 channels to width=16, got in_channels=8"),
        (lambda: SinCos2d(8), "adds dim=8 channels to a map of width=16"),
    ],
)
def test_an_encoding_module_of_other_channels_is_refused_when_the_model_is_built(position, match):
    # only the stem's out_channels was compared: these were built and failed at the first forward,
    # naming `x`, `x_low` or `x_high` ('`x` must have in_channels=2 channels, got shape (1, 3, 8, 8)'
    # for images that fit the model's in_channels=3)
    with pytest.raises(ValueError, match=match):
        CNN(3, 2, width=16, position=position())


def test_none_trains():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = CNN(1, 1, width=8, depth=1)
    losses = train_losses(model, lambda: (x, x.roll(1, dims=-1)), F.mse_loss, steps=40, lr=1e-2)
    assert_loss_falls(losses, factor=0.5)


@pytest.mark.parametrize("position", ["none", "coordconv", "sincos_2d", "hanet"])
def test_input_of_another_dtype_or_device_is_refused_by_name(position):
    model = CNN(3, 10, position=position)
    with pytest.raises(ValueError, match="`x` has dtype torch.float64 but the model's parameters are torch.float32"):
        model(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="`x` is on meta but the model is on cpu"):
        model(torch.randn(2, 3, 8, 8, device="meta"))


@pytest.mark.parametrize("position", ["none", "coordconv", "sincos_2d", "hanet"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 0), (2, 3, 0, 5), (0, 3, 4, 4)])
def test_empty_maps_give_empty_outputs(position, shape):
    # a padded 3x3 convolution of a zero-width map used to fail inside torch
    assert CNN(3, 10, position=position)(torch.randn(shape)).shape == (shape[0], 10, *shape[2:])


@pytest.mark.parametrize("position", cnn_encodings())
def test_materialised_from_meta_equals_a_normal_build(position):
    # posenc.core.meta.materialize redraws submodules in registration order: it equals a normal build
    # under the same seed only if the modules are registered in the order they are built
    from posenc.core.meta import materialize

    torch.manual_seed(0)
    normal = CNN(2, 3, width=4, depth=1, position=position)
    with torch.device("meta"):
        meta = CNN(2, 3, width=4, depth=1, position=position)
    torch.manual_seed(0)
    materialize(meta, "cpu")
    want = normal.state_dict()
    for key, got in meta.state_dict().items():
        torch.testing.assert_close(got, want[key], atol=0, rtol=0, msg=key)
