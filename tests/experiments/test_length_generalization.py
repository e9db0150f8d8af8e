"""The length_generalization experiment's bookkeeping: rows, skips, shards and their merge, scores."""

from __future__ import annotations

import json

import pytest
import torch

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.algorithmic_tasks import TASKS
from posenc.experiments.length_generalization import accuracy_at, parse_shard, rows_for

TINY = {
    "tasks": ["parity_check", "reverse_string"], "encodings": ["none", "rope", "cope"], "randomized": True, "train_max": 3,
    "test_max": 5, "random_range": 0, "dim": 16, "depth": 1, "heads": 2, "batch": 4, "steps": 2, "lr": 1e-3, "warmup": 1, "eval_batch": 4, "seeds": 2,
}


def tiny(tmp_path=None, **overrides):
    result = run_experiment(
        get_experiment("length_generalization"), quick=True, out=tmp_path, overrides=TINY | overrides,
        progress=False, device="cpu",
    )  # fmt: skip
    return result["metrics"]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return tiny()


def test_rows_and_skips(metrics):
    assert metrics["rows"] == ["none", "rope", "rope+rand", "cope"]
    assert set(metrics["skipped"]) == {"none+rand", "cope+rand"}
    assert "contextual" in metrics["skipped"]["cope+rand"]


def test_every_task_row_and_length_is_scored(metrics):
    for task in TINY["tasks"]:
        for row in metrics["rows"]:
            summary = metrics["accuracy"][task][row]
            assert len(summary["per_seed"]) == 2
            assert summary["mean"] == pytest.approx(sum(summary["per_seed"]) / 2)
            assert summary["best"] == max(summary["per_seed"])
            assert list(metrics["per_length"][task][row]) == ["1", "2", "3", "4", "5"]
            assert all(0.0 <= v <= 1.0 for v in metrics["per_length"][task][row].values())
    # the two seeds train different models
    assert len(set(metrics["accuracy"]["reverse_string"]["rope"]["per_seed"])) == 2


def test_random_range_defaults_to_the_longest_test_sequence(metrics):
    assert metrics["random_range"] == {"parity_check": 5 + 1, "reverse_string": 5 + 5}


def test_shards_then_merge_equal_one_run(tmp_path):
    small = {"tasks": ["parity_check"], "encodings": ["rope"]}
    units = tmp_path / "units"
    for i in range(3):
        m = tiny(tmp_path / f"shard{i}", shard=f"{i}/3", units=str(units), **small)
        assert "accuracy" not in m
    files = list(units.glob("*.json"))
    assert len(files) == 2 * 2  # (rope, rope+rand) x 2 seeds
    merged = tiny(tmp_path / "merge", units=str(units), **small)
    assert merged["accuracy"] == tiny(**small)["accuracy"]
    # a stored unit is read back, not trained again: altering it shows in the merge
    path = next(p for p in files if p.name.startswith("parity_check__rope__seed0"))
    unit = json.loads(path.read_text())
    unit["test_accuracy"] = 2.0
    path.write_text(json.dumps(unit))
    again = tiny(tmp_path / "again", units=str(units), **small)
    assert again["accuracy"]["parity_check"]["rope"]["per_seed"][0] == 2.0


@pytest.mark.parametrize("change", [{"steps": 3}, {"seed": 1}])
def test_units_trained_with_other_settings_are_refused(tmp_path, change):
    # a rerun with other settings over the same units folder (`--force` keeps it) used to read the
    # earlier units back and report their numbers under the new configuration
    small = {"tasks": ["parity_check"], "encodings": ["none"], "seeds": 1, "units": str(tmp_path / "units")}
    tiny(tmp_path / "first", **small)
    stored = json.loads(next((tmp_path / "units").glob("*.json")).read_text())
    assert stored["trained_with"]["steps"] == TINY["steps"] and stored["trained_with"]["seed"] == 0
    seed = change.get("seed", 0)
    overrides = TINY | small | {k: v for k, v in change.items() if k != "seed"}
    with pytest.raises(ValueError, match=rf"trained with other settings \({next(iter(change))}="):
        run_experiment(
            get_experiment("length_generalization"), quick=True, seed=seed, out=tmp_path / "second",
            overrides=overrides, progress=False, device="cpu",
        )  # fmt: skip
    # the same settings read the units back (another selection of units does not count)
    again = tiny(tmp_path / "third", **small | {"encodings": ["none", "rope"], "randomized": False})
    assert again["rows"] == ["none", "rope"]


@pytest.mark.parametrize(("text", "message"), [('{"test_acc', "is not valid JSON"), ("[1, 2]", "is not a unit's result")])
def test_a_damaged_unit_is_refused_naming_it(tmp_path, text, message):
    # a unit file cut short (copied between hosts for a merge) was refused with the JSON parser's own
    # message ("Unterminated string ..."), naming no file; a list ended in an AttributeError
    small = {"tasks": ["parity_check"], "encodings": ["none"], "seeds": 1, "randomized": False, "units": str(tmp_path / "units")}
    tiny(tmp_path / "first", **small)
    path = next((tmp_path / "units").glob("*.json"))
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"holds {path.name}, which {message}.*delete it to train that unit again"):
        tiny(tmp_path / "second", **small)


@pytest.mark.parametrize("bad", ["3/3", "1", "a/b", "-1/2"])
def test_bad_shard(bad):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)


def test_training_shorter_than_the_range_is_checked():
    with pytest.raises(ValueError, match="random_range"):
        tiny(random_range=2, tasks=["reverse_string"], encodings=["rope"])


def test_a_learned_table_shorter_than_the_tests_is_refused_before_training(monkeypatch):
    # `learned` gets a table of random_range positions; shorter than the longest test sequence, the
    # sweep trained the rows before it and the learned row, then failed when scoring past the table
    monkeypatch.setattr("posenc.experiments.length_generalization.train_unit", lambda *a: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"`random_range` \(8\) is also the table length .* of 'learned'.* has 10 tokens"):
        tiny(random_range=8, tasks=["reverse_string"], encodings=["rope", "learned"])


@pytest.mark.parametrize("name", ["hash_grid", "ropee"])
def test_unusable_encodings_are_refused_before_training(name):
    # they used to fail only when their row was reached, after the rows before it had trained: a
    # bare TypeError (hash_grid) or an error naming `name`
    with pytest.raises(ValueError, match=rf"`encodings\[1\]` must be one of .*; got '{name}'"):
        tiny(encodings=["rope", name])


def test_an_unknown_task_is_refused_naming_tasks():
    # it was refused as "unknown task 'parity' for `task`", an argument the configuration does not have
    with pytest.raises(ValueError, match=r"`tasks\[1\]` must be one of 'even_pairs', .*; got 'parity'"):
        tiny(tasks=["reverse_string", "parity"])


@pytest.mark.parametrize("key", ["tasks", "encodings"])
def test_a_repeated_entry_is_refused(key):
    # tasks [parity_check, parity_check, reverse_string] gave a headline weighing parity twice (0.552
    # where the two tasks' mean was 0.516), and a repeated encoding a repeated row
    names = {"tasks": ["parity_check", "reverse_string", "parity_check"], "encodings": ["rope", "none", "rope"]}[key]
    with pytest.raises(ValueError, match=rf"`{key}` must name each entry once, got '{names[0]}' more than once"):
        tiny(**{key: names})


def test_rows_for_without_randomized():
    assert rows_for(["rope", "fox"], False) == (["rope", "fox"], {})


def test_accuracy_counts_tokens_up_to_termination():
    task = TASKS["binary_addition"]

    class Oracle(torch.nn.Module):  # predicts the targets from the input: accuracy 1
        def forward(self, tokens):
            inputs = tokens[:, : tokens.shape[1] // 2]
            out = torch.tensor([task.solve(row) for row in inputs.tolist()])
            logits = torch.full((*tokens.shape, 3), -1.0)
            logits[:, -out.shape[1] :].scatter_(-1, out.unsqueeze(-1), 1.0)
            return logits

    g = torch.Generator().manual_seed(0)
    assert accuracy_at(Oracle(), task, 6, batch=8, generator=g, device="cpu") == 1.0


def test_plot_gives_every_row_its_own_colour():
    # the 35 rows of docs/results used to share 20 colours (none was drawn like row 20, and so on)
    from matplotlib.figure import Figure

    from posenc.experiments.length_generalization import plot

    rows = [f"row{i}" for i in range(35)]
    metrics = {
        "tasks": ["parity_check"], "rows": rows, "train_max": 2, "test_max": 4,
        "accuracy": {"parity_check": {r: {"mean": 0.5} for r in rows}},
        "per_length": {"parity_check": {r: {"3": 0.5, "4": 0.5} for r in rows}},
    }  # fmt: skip
    fig = Figure()
    plot({"metrics": metrics}, fig, None)
    lines = fig.axes[-1].get_lines()[: len(rows)]
    assert [line.get_label() for line in lines] == rows
    assert len({line.get_color() for line in lines}) == len(rows)


def test_plot_labels_the_per_length_axes():
    # the per-task panels had no axis labels (length? accuracy as a fraction or in %?)
    from matplotlib.figure import Figure

    from posenc.experiments.length_generalization import plot

    metrics = {
        "tasks": ["parity_check"], "rows": ["rope"], "train_max": 2, "test_max": 4,
        "accuracy": {"parity_check": {"rope": {"mean": 0.5}}},
        "per_length": {"parity_check": {"rope": {"3": 0.5, "4": 0.5}}},
    }  # fmt: skip
    fig = Figure()
    plot({"metrics": metrics}, fig, None)
    panel = fig.axes[-1]
    assert panel.get_title() == "parity_check"
    assert panel.get_xlabel().startswith("length n (trained on 1..2") and panel.get_ylabel() == "accuracy"
