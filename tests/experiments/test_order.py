"""order: the left-neighbour task's batches, and configurations it cannot hold refused before training."""

from __future__ import annotations

import pytest
import torch

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.order import make_batch


def test_batches_hold_n_distinct_symbols_and_their_left_neighbours():
    tokens, targets = make_batch(4, 5, 9, torch.Generator().manual_seed(0))
    assert tokens.shape == targets.shape == (4, 5)
    assert all(len(set(row)) == 5 for row in tokens.tolist())
    assert (targets[:, 0] == -100).all() and (targets[:, 1:] == tokens[:, :-1]).all()


@pytest.mark.parametrize("name", ["order", "shaw_clip"])
@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"n": 20, "vocab": 16}, r"`n` \(20\) must be at most `vocab` \(16\)"), ({"n": 1}, "`n` must be at least 2")],
)
def test_sequences_the_vocabulary_cannot_fill_are_refused(name, overrides, message):
    # n > vocab used to train on vocab-long sequences and report chance as 1 / (n - 1); n = 1 trained, then
    # divided by zero for the chance level
    rows = {"encodings": ["none"]} if name == "order" else {"ks": [1], "variants": []}
    with pytest.raises(ValueError, match=message):
        run_experiment(get_experiment(name), quick=True, out=None, device="cpu", progress=False,
                       overrides={**overrides, **rows, "steps": 1, "eval_batch": 4})


@pytest.mark.parametrize("name", ["hash_grid", "rop", 1])
def test_unusable_encodings_are_refused_before_training(name):
    # they used to fail only when their row was reached, after the rows before it had trained: a bare
    # TypeError (hash_grid, 1) or an error naming `name` and listing every encoding of the registry
    with pytest.raises(ValueError, match=rf"`encodings\[1\]` must be one of 'none', .*; got {name!r}"):
        run_experiment(get_experiment("order"), quick=True, out=None, device="cpu", progress=False,
                       overrides={"encodings": ["none", name], "steps": 1, "eval_batch": 4})
