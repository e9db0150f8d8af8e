"""The extrapolation experiment's bookkeeping: seeds, the copy task, RoPE's scaling rows, learned rows."""

from __future__ import annotations

import pytest
import torch

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.extrapolation import _rescaled, copy_batch, scaling_factor
from posenc.models import Transformer

TINY = {
    "length": 8, "multiples": [1, 2], "dim": 16, "depth": 1, "heads": 2, "batch": 4, "steps": 3, "lr": 1e-3, "warmup": 1, "corpus_bytes": 20_000,
    "eval_tokens": 256, "eval_batch": 8, "tasks": ["text", "copy"], "copy_lag": 4, "copy_vocab": 8, "copy_eval": 4,
    "encodings": ["rope", "learned"], "seeds": 2, "rope_scalings": ["linear", "yarn"],
}


@pytest.fixture(scope="module")
def metrics() -> dict:
    experiment = get_experiment("extrapolation")
    result = run_experiment(experiment, quick=True, out=None, overrides=TINY, progress=False, device="cpu")
    return result["metrics"]


@pytest.mark.parametrize("table", ["bits_per_char", "copy_accuracy"])
def test_every_row_seed_and_multiple_is_reported(metrics, table):
    assert set(metrics[table]) == {"rope", "rope+linear", "rope+yarn", "learned"}
    per_seed = metrics[f"{table}_per_seed"]
    assert len(per_seed) == 2
    for row, values in metrics[table].items():
        for mult, mean in values.items():
            xs = [seed[row][mult] for seed in per_seed]
            if row == "learned" and mult != "1":
                assert mean is None and xs == [None, None] and metrics[f"{table}_std"][row][mult] is None
            else:
                assert mean == pytest.approx(sum(xs) / 2)
    # the two seeds train different models on different batches
    assert per_seed[0]["rope"]["1"] != per_seed[1]["rope"]["1"]


def test_scaling_rows_start_from_the_trained_rope_model(metrics):
    for seed in metrics["bits_per_char_per_seed"] + metrics["copy_accuracy_per_seed"]:
        assert seed["rope+linear"]["1"] == seed["rope"]["1"] and seed["rope+yarn"]["1"] == seed["rope"]["1"]


def test_copy_accuracy_is_a_fraction(metrics):
    values = [v for row in metrics["copy_accuracy"].values() for v in row.values() if v is not None]
    assert values and all(0.0 <= v <= 1.0 for v in values)


def test_copy_batch_repeats_at_the_lag():
    x = copy_batch(3, 11, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == (3, 11) and torch.equal(x[:, 4:], x[:, :-4]) and int(x.min()) >= 1 and int(x.max()) < 8


def test_rescaled_keeps_the_weights_and_changes_only_the_rotation():
    torch.manual_seed(0)
    model = Transformer(16, 16, 1, 2, position="rope", causal=True).eval()
    tokens = torch.randint(0, 16, (2, 12))
    same = _rescaled(model, "linear", 1.0, 8)
    stretched = _rescaled(model, "linear", 2.0, 8)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), stretched.state_dict().values()))
    with torch.no_grad():
        assert torch.allclose(same(tokens), model(tokens), atol=1e-6)
        assert not torch.allclose(stretched(tokens), model(tokens), atol=1e-4)


NEW = ["fire", "kerple", "sandwich", "cope", "fox", "dynamic_bias", "cpb"]


def test_full_configuration_includes_the_length_generalisation_encodings():
    from posenc.experiments.common import sequence_encodings

    experiment = get_experiment("extrapolation")
    assert experiment.full["encodings"] == []  # every causal sequence encoding in the registry
    assert set(NEW) <= set(sequence_encodings(causal=True))


def test_new_encodings_train_and_score_at_every_multiple():
    overrides = TINY | {"encodings": NEW, "seeds": 1, "rope_scalings": [], "tasks": ["copy"]}
    m = run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")
    table = m["metrics"]["copy_accuracy"]
    assert set(table) == set(NEW)
    assert all(0.0 <= v <= 1.0 for row in table.values() for v in row.values())


def test_unknown_task_is_refused_before_training():
    # an unknown task used to train and score the copy task under its name
    overrides = {**TINY, "tasks": ["text", "cpy"], "encodings": ["rope"]}
    with pytest.raises(ValueError, match=r"`tasks\[1\]` must be one of 'text', 'copy'; got 'cpy'"):
        run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")


@pytest.mark.parametrize("name", ["hash_grid", "wav2vec2_conv", "alibbi"])
def test_unusable_encodings_are_refused_before_training(name):
    # they used to fail only when their row was reached, after the rows before it had trained: a
    # bare TypeError (hash_grid), or an error naming `name` or no argument at all
    overrides = {**TINY, "encodings": ["rope", name]}
    with pytest.raises(ValueError, match=rf"`encodings\[1\]` must be one of .*; got '{name}'"):
        run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")


@pytest.mark.parametrize("name", ["yarnn", "longrope", "none"])
def test_unusable_rope_scalings_are_refused_before_training(name, monkeypatch):
    # they used to fail only when the trained RoPE model was rescaled, after training it (and every row
    # before it), naming `scaling` ('yarnn'), `short_factor` (longrope) or `factor` (none)
    monkeypatch.setattr("posenc.experiments.extrapolation.train_row", lambda *a: pytest.fail("trained"))
    overrides = {**TINY, "encodings": ["rope"], "rope_scalings": ["linear", name]}
    with pytest.raises(ValueError, match=rf"`rope_scalings\[1\]` must be one of 'linear', .*; got '{name}'"):
        run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus_bytes": 1000}, r"`corpus_bytes` \(1000\) leaves 100 held-out bytes"),
        ({"eval_tokens": 10}, r"`eval_tokens` \(10\) must be at least the longest evaluation window"),
        ({"tasks": ["copy"], "copy_lag": 8}, r"`copy_lag` \(8\) must be less than `length` \(8\)"),
        ({"tasks": ["copy"], "copy_vocab": 1}, r"`copy_vocab` must be >= 2"),
    ],
)
def test_configurations_the_evaluation_cannot_fill_are_refused_before_training(change, message, monkeypatch):
    # they used to train every row, then fail in the evaluation: a bare view() shape error from torch
    # (too few held-out bytes), ZeroDivisionError (no window, or nothing past the lag), or randint's error
    monkeypatch.setattr("posenc.experiments.extrapolation.train_row", lambda *a: pytest.fail("trained"))
    overrides = {**TINY, "encodings": ["alibi"], "seeds": 1, "rope_scalings": []} | change
    with pytest.raises(ValueError, match=message):
        run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")


def test_multiples_without_the_trained_length_have_no_headline_ratio():
    # multiples with 4 but without 1 used to end, after training, in KeyError: '1' (the ratio 4L / L)
    overrides = {**TINY, "multiples": [2, 4], "tasks": ["text"], "encodings": ["alibi"], "seeds": 1, "rope_scalings": []}
    m = run_experiment(get_experiment("extrapolation"), quick=True, out=None, overrides=overrides, progress=False, device="cpu")
    assert m["metrics"]["ratio_4L_to_L"] == {} and set(m["metrics"]["bits_per_char"]["alibi"]) == {"2", "4"}


@pytest.mark.parametrize("multiple", [2, 4, 8])
def test_dynamic_ntk_row_is_stretched_by_the_multiple_not_its_square(multiple):
    """At m L, dynamic NTK's base is base * (factor * m - (factor - 1)) ** (d / (d - 2)): the row must
    use the stretch m (the NTK-aware base at factor m), as every other row does, not m² - m + 1."""
    torch.manual_seed(0)
    L = 8
    model = Transformer(16, 8, 1, 1, position="rope", causal=True).eval()
    tokens = torch.randint(0, 16, (2, L * multiple))
    dynamic = _rescaled(model, "dynamic_ntk", scaling_factor("dynamic_ntk", multiple), L)
    ntk = _rescaled(model, "ntk", scaling_factor("ntk", multiple), L)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(tokens), ntk(tokens), atol=1e-5, rtol=1e-5)
    old = _rescaled(model, "dynamic_ntk", float(multiple), L)  # factor m: stretched by m² - m + 1
    with torch.no_grad():
        assert not torch.allclose(old(tokens), ntk(tokens), atol=1e-3)


def test_plot_gives_every_row_its_own_colour():
    # the 23 rows of docs/results used to share 20 colours: fox was drawn like none, sandwich like sinusoidal
    from matplotlib.figure import Figure

    from posenc.experiments.extrapolation import plot

    rows = [f"row{i}" for i in range(23)]
    table = {r: {"1": 3.0 + i / 100, "2": 3.1 + i / 100} for i, r in enumerate(rows)}
    fig = Figure()
    plot({"metrics": {"bits_per_char": table, "trained_length": 8}, "curves": {}}, fig, None)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == rows
    assert len({line.get_color() for line in lines}) == len(rows)
