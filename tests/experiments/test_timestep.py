"""timestep: configurations the step embeddings cannot take are refused before training."""

from __future__ import annotations

import pytest

from posenc.experiments import get_experiment, run_experiment


def test_an_embedding_too_narrow_for_ddpm_is_refused_before_training():
    # emb_dim = 3 used to train the 'none' and 'raw' denoisers, then fail inside TimestepEmbedding
    # with an error naming `downscale_freq_shift` and `dim`
    with pytest.raises(ValueError, match="`emb_dim` must be at least 4.*got 3"):
        run_experiment(get_experiment("timestep"), quick=True, out=None, device="cpu", progress=False,
                       overrides={"emb_dim": 3, "train_steps": 1, "steps_T": 5, "eval_points": 10})
