"""shaw_clip: a --set that names an unknown variant is refused before training."""

from __future__ import annotations

import pytest

from posenc.experiments import get_experiment, run_experiment


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match=r"`variants\[1\]` must be one of 'keys', 'values', 'both'; got 'bogus'"):
        run_experiment(get_experiment("shaw_clip"), quick=True, out=None, device="cpu",
                       overrides={"variants": ["keys", "bogus"], "ks": [], "steps": 1})
