"""coordconv: the Not-so-Clevr data, the regression models, and the inverse direction's claim.

The claim test trains only the quadrant split's two regressors; each row is seeded by its own name,
so the numbers are those of the same rows in ``posenc run coordconv --quick``.
"""

from __future__ import annotations

import pytest
import torch

from posenc.experiments import get_experiment
from posenc.experiments.coordconv import (
    SQUARE,
    ConvRegressor,
    CoordConvRegressor,
    centres,
    regress_one,
    regression_images,
    split,
    train_one,
)
from posenc.experiments.harness import Context, Interrupted


def test_centres_and_splits():
    points = centres(32)
    r = SQUARE // 2
    assert len(points) == (32 - 2 * r) ** 2
    assert points.min() == r and points.max() == 32 - 1 - r
    train, test = split(points, "quadrant", 32, torch.Generator().manual_seed(0))
    expected = [bool(x >= 16 and y >= 16) for x, y in points.tolist()]
    assert test.tolist() == expected and (train == ~test).all()
    train, test = split(points, "uniform", 32, torch.Generator().manual_seed(0))
    assert int(test.sum()) == len(points) // 4 and (train == ~test).all()


def test_regression_images_mark_the_centre():
    points = torch.tensor([[4, 4], [10, 20], [27, 5]])
    onehot = regression_images(points, 32, "onehot")
    square = regression_images(points, 32, "square")
    assert onehot.shape == square.shape == (3, 1, 32, 32)
    for k, (x, y) in enumerate(points.tolist()):
        assert onehot[k, 0].sum() == 1 and onehot[k, 0, y, x] == 1  # row y, column x
        block = square[k, 0, y - 4 : y + 5, x - 4 : x + 5]
        assert square[k, 0].sum() == SQUARE * SQUARE and (block == 1).all()
    with pytest.raises(ValueError, match="regression_input"):
        regression_images(points, 32, "circle")


def test_regressors_map_images_to_two_coordinates():
    images = regression_images(centres(32)[:5], 32, "onehot")
    conv, coord = ConvRegressor(32, 8), CoordConvRegressor(32, 8)
    assert conv(images).shape == coord(images).shape == (5, 2)
    # CoordConv: (1 + 2 coordinate channels) * 8 + 8 bias, then a read-out 8 -> 2
    assert sum(p.numel() for p in coord.parameters()) == 3 * 8 + 8 + 8 * 2 + 2


def test_coordconv_regressor_can_express_the_exact_answer_everywhere():
    # one unit per axis: relu(big * pixel + coordinate + 1) is coordinate + 1 + big at the pixel and at
    # most 2 elsewhere, so the global max reads the coordinate of the lit pixel on the whole canvas
    canvas, big = 32, 10.0
    model = CoordConvRegressor(canvas, 2)
    with torch.no_grad():
        # channels: image, x, y
        model.net[0].conv.weight.copy_(torch.tensor([[big, 1.0, 0.0], [big, 0.0, 1.0]]).view(2, 3, 1, 1))
        model.net[0].conv.bias.fill_(1.0)
        model.readout.weight.copy_(torch.eye(2))
        model.readout.bias.fill_(-1.0 - big)
    points = centres(canvas)
    out = model(regression_images(points, canvas, "onehot"))
    torch.testing.assert_close((out + 1) * (canvas - 1) / 2, points.float(), atol=1e-4, rtol=0)


def test_coordconv_regressor_generalises_to_the_held_out_quadrant_conv_does_not():
    config = dict(get_experiment("coordconv").quick)
    ctx = Context(name="coordconv", config=config, seed=0, quick=True, out_dir=None, progress=False)
    coord = regress_one(ctx, "coordconv", "quadrant")
    conv = regress_one(ctx, "conv", "quadrant")
    assert coord["train"] >= 0.99 and conv["train"] >= 0.95  # both fit what they see
    # quick runs, seeds 0-5: CoordConv test 1.0, 1.0, 1.0, 0.69, 1.0, 0.88 (mean error 0.02-0.3 pixel);
    # conv test 0.10-0.18 (mean error 3-5 pixels)
    assert coord["test"] >= 0.6
    assert coord["test"] - conv["test"] >= 0.4
    assert coord["test_mae_pixels"] <= 0.5 and conv["test_mae_pixels"] >= 2.0
    assert coord["parameters"] * 10 <= conv["parameters"]


def test_unknown_split_is_refused():
    from posenc.experiments import run_experiment

    with pytest.raises(ValueError, match=r"`splits\[0\]` must be one of 'uniform', 'quadrant'; got 'bogus'"):
        run_experiment(get_experiment("coordconv"), quick=True, out=None, device="cpu",
                       overrides={"splits": ["bogus"], "steps": 1, "coordconv_steps": 1, "regression_steps": 1})


class _StopAtStep(Context):
    """A context that asks the training to stop (as SIGTERM does) once it reaches step ``stop_at``."""

    stop_at: int | None = None

    def generator(self, *keys):
        if len(keys) == 2 and keys[1] == self.stop_at:
            self._stop = True
        return super().generator(*keys)


def test_first_step_at_99_percent_survives_a_resume(tmp_path):
    # the step is recorded while training (the regressors record theirs the same way): an interruption
    # after it must not lose it on --resume
    config = dict(get_experiment("coordconv").quick, canvas=16, batch=16, coordconv_steps=70)

    def context(out):
        return _StopAtStep(name="coordconv", config=config, seed=0, quick=True, out_dir=out, progress=False)

    reference = train_one(context(None), "coordconv", "uniform")
    assert reference["first_step_batch_acc_99"] == 62
    interrupted = context(tmp_path)
    interrupted.stop_at = 66
    with pytest.raises(Interrupted):
        train_one(interrupted, "coordconv", "uniform")
    resumed = context(tmp_path)
    assert resumed.load_checkpoint()
    assert train_one(resumed, "coordconv", "uniform") == reference


@pytest.mark.parametrize("canvas", [48, 36, 8])
def test_a_canvas_the_models_cannot_paint_is_refused_by_name(canvas):
    # 48 and 36 used to fail at the first step with 'Target ... is out of bounds' (the painter's output
    # was 32 x 32), 8 with 'random_ expects from < to' (no centre where a 9 x 9 square fits)
    from posenc.experiments import run_experiment

    with pytest.raises(ValueError, match=rf"`canvas` must be a power of two of at least 16.*got {canvas}"):
        run_experiment(get_experiment("coordconv"), quick=True, out=None, device="cpu",
                       overrides={"canvas": canvas, "steps": 1, "coordconv_steps": 1, "regression_steps": 1})


def test_plot_puts_the_training_curves_on_the_step_axis():
    # losses are logged every LOG_EVERY steps; the panel used to plot them against their index, so a
    # 2,000-step training ended at 'step' 400
    from matplotlib.figure import Figure

    from posenc.experiments.coordconv import LOG_EVERY, plot

    scores = {"train": 1.0, "test": 1.0}
    result = {
        "curves": {"deconv:uniform": [3.0, 2.0, 1.0]},
        "metrics": {"accuracy": {"deconv:uniform": scores}, "regression": {"conv:uniform": scores}},
    }
    fig = Figure()
    plot(result, fig, None)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, LOG_EVERY, 2 * LOG_EVERY] and fig.axes[0].get_xlabel() == "step"
