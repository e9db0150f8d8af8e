"""Inputs of the padding probe: noise or random crops of bundled photographs."""

from __future__ import annotations

import pytest
import torch

from posenc.experiments.padding_probe import input_images


def test_noise_inputs_are_seeded():
    a = input_images("noise", 2, 8, torch.Generator().manual_seed(0))
    b = input_images("noise", 2, 8, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b)


def test_natural_inputs_are_standardised_crops_of_photographs():
    pytest.importorskip("skimage")
    x = input_images("natural", 6, 24, torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 24, 24) and torch.isfinite(x).all()
    flat = x.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(flat.std(1), torch.ones(6), atol=1e-3)
    assert not torch.allclose(x[0], x[1])
    # photographs are smooth: neighbouring pixels correlate strongly, unlike white noise
    neighbour = torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    assert neighbour > 0.5


def test_unknown_inputs_are_rejected_by_name():
    with pytest.raises(ValueError, match="inputs"):
        input_images("photos", 1, 8, torch.Generator())


def test_crops_larger_than_the_photographs_are_refused_before_training():
    # size 300 used to train the zero and circular variants, then fail inside torch.randint
    # ("random_ expects 'from' to be less than 'to'") on the valid variants' 330-pixel crops
    pytest.importorskip("skimage")
    from posenc.experiments import get_experiment, run_experiment

    with pytest.raises(ValueError, match=r"`size` \(300\) is too large for inputs='natural'.*330 pixels.*300 pixels"):
        run_experiment(get_experiment("padding_probe"), quick=True, out=None, device="cpu", progress=False,
                       overrides={"inputs": "natural", "size": 300, "steps": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"probe_paddings": ["zero", "zeros"]}, r"`probe_paddings\[1\]` must be one of 'zero', .*; got 'zeros'"),
        ({"patterns": ["horizonal"]}, r"`patterns\[0\]` must be one of 'horizontal', .*; got 'horizonal'"),
        ({"patterns": []}, "`patterns` must name at least one of 'horizontal'"),
        # these failed inside torch: no convolution at all, and (after the zero-padding CNN had trained)
        # circular padding wider than the image ('Padding value causes wrapping around more than once')
        ({"dilations": []}, "`dilations` must give at least one"),
        ({"size": 7, "dilations": [1, 8]}, r"`size` \(7\) must be at least the largest of `dilations` \(8\)"),
    ],
)
def test_unknown_patterns_and_probe_paddings_are_refused_by_name_before_training(overrides, message):
    # an unknown probe padding failed as `padding` after the four CNNs had trained; a pattern was named `names`
    from posenc.experiments import get_experiment, run_experiment

    with pytest.raises(ValueError, match=message):
        run_experiment(get_experiment("padding_probe"), quick=True, out=None, device="cpu", progress=False,
                       overrides={"size": 16, "steps": 1, **overrides})
