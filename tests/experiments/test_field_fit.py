"""field_fit's pieces: matched parameter budgets, the procedural shape, time-to-target bookkeeping."""

from __future__ import annotations

import pytest
import torch

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.field_fit import FREQUENCY, GRIDS, build, shape_sdf, summarise, to_target


def test_every_encoding_is_built_within_the_parameter_budget():
    c = get_experiment("field_fit").quick
    for in_dim, names in ((2, [n for n in FREQUENCY] + ["hash_grid"]), (3, [*FREQUENCY, *GRIDS])):
        for name in names:
            _enc, model = build(name, in_dim, 3, c, 0)
            params = sum(p.numel() for p in model.parameters())
            assert 0.6 * c["params"] <= params <= 1.05 * c["params"], (name, in_dim, params)
            assert model(torch.rand(5, in_dim)).shape == (5, 3)


def test_shape_has_inside_and_outside_and_fills_a_modest_fraction():
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0))
    inside = (shape_sdf(x) < 0).float().mean().item()
    assert 0.02 < inside < 0.3
    assert shape_sdf(torch.full((1, 3), 0.0)).item() > 0  # a corner of the cube is outside


def test_steps_to_target_is_the_first_logged_crossing():
    rows = {
        "nerf": {"steps": [10, 20, 30], "seconds": [1.0, 2.0, 3.0], "metric": [10.0, 20.0, 25.0], "final": 25.0, "params": 1},
        "hash_grid": {"steps": [10, 20, 30], "seconds": [2.0, 4.0, 6.0], "metric": [26.0, 27.0, 28.0], "final": 28.0, "params": 1},
        "none": {"steps": [10, 20, 30], "seconds": [1.0, 2.0, 3.0], "metric": [5.0, 6.0, 7.0], "final": 7.0, "params": 1},
    }
    steps, secs = to_target(rows, 25.0)
    assert steps == {"nerf": 30, "hash_grid": 10, "none": None} and secs["hash_grid"] == 2.0
    s = summarise(rows)
    assert s["best_frequency"] == "nerf" and s["target"] == 25.0 and s["hash_steps_fraction"] == 10 / 30


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tasks": ["imag"]}, r"`tasks\[0\]` must be one of 'image', 'shape'; got 'imag'"),
        ({"encodings": ["none", "hashgrid"]}, r"`encodings\[1\]` must be one of .*'hash_grid'.*; got 'hashgrid'"),
        ({"encodings": ["hash_grid", "kplanes"]}, "`encodings` must include a frequency encoding"),
    ],
)
def test_rows_it_does_not_have_are_refused_before_training(overrides, message):
    # an unknown task was skipped (an empty result), an unknown encoding trained as K-planes under its
    # name, and a list without a frequency encoding failed after training with 'max() arg is an empty sequence'
    with pytest.raises(ValueError, match=message):
        run_experiment(get_experiment("field_fit"), quick=True, out=None, device="cpu", progress=False,
                       overrides={**overrides, "size": 16, "grid": 8, "batch": 64, "steps": 1, "params": 3000})
