"""height_prior: a --set that names an unknown variant is refused before training."""

from __future__ import annotations

import pytest

from posenc.experiments import get_experiment, run_experiment


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match=r"`variants\[0\]` must be one of 'baseline', 'hanet', 'coordconv'; got 'bogus'"):
        run_experiment(get_experiment("height_prior"), quick=True, out=None, device="cpu",
                       overrides={"variants": ["bogus"], "steps": 1})
