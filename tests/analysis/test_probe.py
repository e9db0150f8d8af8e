"""Islam et al.'s position probe: zero padding leaks position, no padding does not."""

from __future__ import annotations

import pytest
import torch

from posenc.analysis import PADDINGS, position_patterns, position_probe, probe_cnn, spearman


def _images() -> torch.Tensor:
    return torch.rand(12, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def test_zero_padding_leaks_far_more_than_no_padding():
    zero = position_probe(probe_cnn("zero"), _images(), steps=80, seed=0)
    none = position_probe(probe_cnn("none"), _images(), steps=80, seed=0)
    assert zero.spearman["horizontal"] > 0.25
    assert zero.mean_spearman > none.mean_spearman + 0.2
    assert abs(none.mean_spearman) < 0.1
    assert none.feature_size == (16, 16) and zero.feature_size == (24, 24)


def test_same_weights_for_every_padding():
    nets = [probe_cnn(p, seed=3) for p in PADDINGS]
    for net in nets[1:]:
        torch.testing.assert_close(net[0].weight, nets[0][0].weight)
    assert nets[0][0].padding_mode == "zeros" and nets[1][0].padding_mode == "reflect"
    assert nets[2][0].padding_mode == "circular" and nets[3][0].padding == (0, 0)


def test_circular_padding_is_translation_equivariant():
    net = probe_cnn("circular", depth=2)
    x = torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(net(x.roll(3, dims=-1)), net(x).roll(3, dims=-1), atol=1e-5, rtol=0)


def test_spearman_known_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a.exp()) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    assert spearman(torch.tensor([0.0, 0.0, 1.0, 2.0]), a) == pytest.approx(0.9486832980505138)
    assert spearman(torch.ones(4), a) == 0.0


def test_patterns():
    p = position_patterns(5, 7)
    assert set(p) == {"horizontal", "vertical", "gaussian", "horizontal_stripes", "vertical_stripes"}
    assert p["horizontal"][0, 0] == 0 and p["horizontal"][0, -1] == 1 and (p["horizontal"][:, 3] == 0.5).all()
    assert p["gaussian"][2, 3] == pytest.approx(1.0)
    assert all(0 <= t.min() and t.max() <= 1 for t in p.values())


def test_multi_scale_features_accepted():
    net = probe_cnn("zero", depth=2)
    result = position_probe(lambda x: [net(x), net(x)[..., ::2, ::2]], _images()[:4], patterns=["gaussian"], steps=5)
    assert set(result.spearman) == {"gaussian"}


def test_bad_input():
    with pytest.raises(ValueError, match="padding"):
        probe_cnn("same")
    with pytest.raises(ValueError, match="kernel_size"):
        probe_cnn("zero", kernel_size=2)
    with pytest.raises(ValueError, match="images"):
        position_probe(probe_cnn("zero"), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="names"):
        position_patterns(4, 4, ["diagonal"])
    with pytest.raises(ValueError, match="model"):
        position_probe(lambda x: x.mean((2, 3)), torch.rand(4, 3, 8, 8))


def test_nan_input_raises_naming_the_argument():
    # NaN images used to give a result with NaN errors and meaningless correlations
    with pytest.raises(ValueError, match="`images` must be finite"):
        position_probe(probe_cnn("zero"), torch.full((4, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="`model` returned NaN"):
        position_probe(lambda x: x * float("inf"), torch.rand(4, 3, 16, 16))
    with pytest.raises(ValueError, match="`lr`"):
        position_probe(probe_cnn("zero"), torch.rand(4, 3, 16, 16), lr=float("nan"))
    with pytest.raises(ValueError, match="`a` must be finite"):
        spearman(torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([1.0, 2.0, 3.0]))


def test_pattern_names_are_checked_before_the_model_runs():
    # patterns=() trained nothing and mean_spearman raised ZeroDivisionError; a single string was read
    # letter by letter and refused as "`names` must be one of ...; got 'h'", an argument never passed
    calls = []

    def model(x):
        calls.append(1)
        return x

    images = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="`patterns` must name at least one of 'horizontal'"):
        position_probe(model, images, patterns=())
    with pytest.raises(TypeError, match=r"`patterns` must be a sequence of pattern names such as \['horizontal'\], got 'horizontal'"):
        position_probe(model, images, patterns="horizontal")
    with pytest.raises(ValueError, match="`patterns` must be one of"):
        position_probe(model, images, patterns=["diagonal"])
    assert not calls
    with pytest.raises(TypeError, match="`names` must be a sequence of pattern names"):
        position_patterns(4, 4, "gaussian")
    with pytest.raises(ValueError, match="`names` must name at least one"):
        position_patterns(4, 4, [])


def test_seeds_are_checked_by_name():
    # probe_cnn(seed='a') failed inside torch.Generator.manual_seed, position_probe's with
    # 'can only concatenate str (not "int") to str' after the features were computed
    with pytest.raises(TypeError, match="`seed` must be an int, got str 'a'"):
        probe_cnn("zero", seed="a")
    with pytest.raises(TypeError, match="`seed` must be an int, got str 'a'"):
        position_probe(probe_cnn("zero", depth=1), torch.rand(4, 3, 8, 8), steps=1, seed="a")


def test_empty_feature_maps_are_refused_naming_the_model():
    # a map without pixels was refused as '`h` must be >= 1, got 0' (position_patterns' argument), one
    # without channels inside the read-out's convolution ('expected input ... to have 32 channels')
    images = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"`model` returned feature map 0 without channels or pixels, of shape \(4, 3, 0, 8\)"):
        position_probe(lambda x: x[..., :0, :], images, steps=1)
    with pytest.raises(ValueError, match=r"`model` returned feature map 0 without channels or pixels, of shape \(4, 0, 8, 8\)"):
        position_probe(lambda x: x[:, :0], images, steps=1)
