"""height_prior: a --set that names an unknown variant is refused before training."""

from __future__ import annotations

import pytest

from posenc.experiments import get_experiment, run_experiment


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match=r"`variants\[0\]` must be one of 'baseline', 'hanet', 'coordconv'; got 'bogus'"):
        run_experiment(get_experiment("height_prior"), quick=True, out=None, device="cpu",
                       overrides={"variants": ["bogus"], "steps": 1})


def test_a_size_the_scenes_cannot_tile_is_refused_by_name():
    # size 30 used to fail inside torch.where ('The size of tensor a (30) must match the size of tensor b (28)')
    with pytest.raises(ValueError, match="`size` must be a multiple of 4.*got 30"):
        run_experiment(get_experiment("height_prior"), quick=True, out=None, device="cpu",
                       overrides={"size": 30, "steps": 1})
    result = run_experiment(get_experiment("height_prior"), quick=True, out=None, device="cpu", progress=False,
                            overrides={"size": 12, "steps": 1, "eval_batch": 2, "width": 4})
    assert set(result["metrics"]["miou"]) == {"baseline", "hanet", "coordconv"}


def test_plot_puts_the_training_curves_on_the_step_axis():
    # losses are logged every LOG_EVERY steps; the panel used to plot them against their index
    from matplotlib.figure import Figure

    from posenc.experiments.height_prior import LOG_EVERY, plot

    fig = Figure()
    plot({"curves": {"baseline": [3.0, 2.0, 1.0]}, "metrics": {"miou": {"baseline": 0.5}}}, fig, None)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, LOG_EVERY, 2 * LOG_EVERY]
