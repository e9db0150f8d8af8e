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
