"""equivariance: the measured deviations, for sentences shorter than the 3-word example too."""

from __future__ import annotations

from posenc.experiments import get_experiment, run_experiment


def test_random_sentences_shorter_than_the_example_are_measured():
    # n = 2 used to fail on the learned table (max_len = n), which could not hold "Alice likes oranges"
    config = {"vocab": 8, "dim": 8, "depth": 1, "heads": 2, "n": 2, "batch": 2, "trials": 1}
    metrics = run_experiment(get_experiment("equivariance"), quick=True, out=None, device="cpu", progress=False,
                             overrides=config)["metrics"]
    assert metrics["deviation_alice"]["none"] < 1e-5 and metrics["deviation_alice"]["learned"] > 1e-3
    assert set(metrics["deviation_random"]) == set(metrics["deviation_alice"])
