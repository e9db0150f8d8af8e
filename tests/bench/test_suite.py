"""`posenc bench` runs end to end at tiny sizes (so it cannot rot); no timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from posenc.bench import format_table
from posenc.bench.cases import Case
from posenc.bench.peers import PeerMissing
from posenc.bench.rope_cases import rope_case
from posenc.cli import main


def test_quick_suite_runs_and_peers_agree(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POSENC_FUSED", "0")  # the suite's plumbing is under test here, not the kernels' compile time
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rounds", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["case"].split()[0] for r in rows} >= {"rope", "sinusoidal", "alibi", "t5", "train"}
    for r in rows:
        # every implementation either ran (and, where compared, agreed with posenc) or was skipped
        assert r["note"].startswith("skipped") or (r["median_ms"] is not None and r["agrees"] is not False), r
    assert "machine:" in capsys.readouterr().out


def test_only_runs_the_cases_whose_name_contains_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POSENC_FUSED", "0")
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--rounds", "1", "--only", "sinusoidal 2-D", "--json", str(out)]) == 0
    cases = {r["case"] for r in json.loads(out.read_text())["rows"]}
    assert cases == {"sinusoidal 2-D table 16x16 c64"}
    capsys.readouterr()
    # a text that names no case: exit status 2 and the list of case names, no traceback
    assert main(["bench", "--quick", "--rounds", "1", "--only", "no such case"]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "'no such case'" in err and "sinusoidal 2-D table 16x16 c64" in err
    assert "Traceback" not in err


def test_missing_peer_is_reported_as_skipped():
    def missing():
        raise PeerMissing("nothing is installed")

    case = Case("demo", "a", {"a": lambda: (lambda: torch.ones(3)), "b": missing})
    rows = {r.impl: r for r in case.run(rounds=1)}
    assert rows["b"].note.startswith("skipped") and rows["b"].median_ms is None
    assert rows["a"].ratio == 1.0


def test_disagreeing_implementation_is_not_timed():
    case = Case("demo", "a", {"a": lambda: (lambda: torch.ones(3)), "b": lambda: (lambda: torch.zeros(3))}, agree_with={"b": "a"})
    rows = {r.impl: r for r in case.run(rounds=1)}
    assert rows["b"].agrees is False and rows["b"].median_ms is None


def test_rope_case_checks_layouts_against_posenc():
    rows = {r.impl: r for r in rope_case(1, 1, 8, 8, torch.float32, "cpu").run(rounds=1)}
    assert rows["posenc (adjacent pairs)"].median_ms is not None
    assert "\n" in format_table({"rows": [r.as_dict() for r in rows.values()], "machine": {"device": "cpu", "platform": "", "torch": "", "threads": 1, "rounds": 1}})


def test_mrope_case_agrees_with_transformers_or_skips():
    from posenc.bench.mrope import mrope_case

    for layout in ("chunked", "interleaved"):
        rows = {r.impl: r for r in mrope_case(1, 2, 16, 16, layout, torch.float32, "cpu").run(rounds=1)}
        assert rows["posenc apply_mrope"].median_ms is not None
        peer = next(r for impl, r in rows.items() if impl.startswith("transformers"))
        assert peer.note.startswith("skipped") or peer.agrees is True, peer


def test_scaled_rope_cos_sin_cases_agree_with_transformers():
    from posenc.bench.cases import rope_cos_sin_case

    for kind in ("llama3", "longrope", "yarn"):
        rows = {r.impl: r for r in rope_cos_sin_case(kind, 1, 16, 8, "cpu").run(rounds=1)}
        assert rows["posenc (implicit, cached table)"].agrees is True
        peer = rows["transformers (position_ids)"]
        assert peer.note.startswith("skipped") or peer.agrees is True, peer


def test_hash_grid_memory_is_linear_in_points_times_levels():
    from posenc.bench.cases import hash_grid_memory_cases

    cases = hash_grid_memory_cases([(1024, 4), (2048, 4), (1024, 8)], log2_table=8)
    peak = [c.run(rounds=1)[0].peak_mb for c in cases]
    assert all(p is not None and p > 0 for p in peak)
    assert 1.8 <= peak[1] / peak[0] <= 2.2  # twice the points
    assert 1.8 <= peak[2] / peak[0] <= 2.2  # twice the levels


def test_cpu_time_leaves_out_waiting():
    """A call that sleeps takes wall-clock time but almost no CPU time; one that computes takes both."""
    import math
    import time

    from posenc.bench.timing import interleaved_times

    def busy():
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    times = interleaved_times({"sleep": lambda: time.sleep(0.02), "busy": busy}, rounds=3, warmup=0)
    assert times["sleep"][0] >= 0.019 and times["sleep"][1] < 0.005
    assert times["busy"][1] >= 0.019
    rows = {r.impl: r for r in Case("demo", "busy", {"busy": lambda: busy, "sleep": lambda: (lambda: time.sleep(0.02))}).run(rounds=3)}
    assert rows["busy"].cpu_ratio == 1.0 and rows["sleep"].cpu_ratio < 0.25
    # the wall ratio is the sleep's own wall time over the busy call's (which other load stretches)
    assert rows["sleep"].median_ms >= 19
    assert math.isclose(rows["sleep"].ratio, rows["sleep"].median_ms / rows["busy"].median_ms, rel_tol=1e-2)


def test_flex_cpu_case_compares_flex_with_the_blocked_kernel(monkeypatch):
    # the plumbing at a tiny size, flex unfused (the compiled kernel is tested in tests/attention/test_flex.py)
    from posenc.bench.cases import flex_cpu_case

    monkeypatch.setattr("posenc.attention.flex.COMPILE", False)
    for decode in (False, True):
        rows = {r.impl: r for r in flex_cpu_case("t5", 8, decode=decode, heads=2, d=4).run(rounds=1)}
        assert set(rows) == {"posenc t5 (blocked)", "posenc t5 (flex, compiled)", "no encoding (blocked)",
                             "no encoding (flex, compiled)"}
        assert all(r.agrees is not False and r.median_ms is not None for r in rows.values()), rows
        assert rows["posenc t5 (flex, compiled)"].agrees is True


def test_a_missing_peer_names_the_extra_that_installs_it(monkeypatch):
    import sys

    import pytest

    from posenc.bench.peers import require

    for module, extra in (("transformers.models.llama.modeling_llama", '"posenc[hf]"'),
                          ("x_transformers.x_transformers", '"posenc[bench]"')):
        for name in [m for m in sys.modules if m == module.split(".")[0] or m.startswith(module.split(".")[0] + ".")]:
            monkeypatch.delitem(sys.modules, name)  # imported by an earlier test: forgotten for this one
        monkeypatch.setitem(sys.modules, module.split(".")[0], None)  # `import` now raises ImportError
        with pytest.raises(PeerMissing, match=extra.replace("[", r"\[").replace("]", r"\]")):
            require(module)


def test_cases_time_on_the_suites_device(monkeypatch):
    # CUDA runs asynchronously: the timing and the memory probe synchronise the device the inputs live on
    from posenc.bench import cases, run_suite

    seen = []
    timed, peak = cases.interleaved_times, cases.peak_memory_bytes
    monkeypatch.setattr(cases, "interleaved_times", lambda fns, **kw: seen.append(kw.get("device")) or timed(fns, **kw))
    monkeypatch.setattr(cases, "peak_memory_bytes", lambda fn, device=None: seen.append(device) or peak(fn, device))
    run_suite(quick=True, rounds=1, device="cpu", only="shaw attention")
    assert len(seen) == 4 and all(d == torch.device("cpu") for d in seen), seen


def test_a_json_path_that_cannot_be_written_fails_before_the_run(tmp_path, capsys, monkeypatch):
    import posenc.bench

    def not_run(**kwargs):
        raise AssertionError("the suite ran")

    monkeypatch.setattr(posenc.bench, "run_suite", not_run)
    assert main(["bench", "--quick", "--json", str(tmp_path)]) == 1  # a folder
    err = capsys.readouterr().err
    assert f"cannot write: {tmp_path}: Is a directory" in err and "Traceback" not in err
    (tmp_path / "file").write_text("")
    assert main(["bench", "--quick", "--json", str(tmp_path / "file" / "bench.json")]) == 1  # below a file
    assert f"cannot write: {tmp_path / 'file' / 'bench.json'}" in capsys.readouterr().err


def test_flex_training_case_compares_outputs_and_the_learned_tables_gradients():
    # the plumbing on CPU, with the eager reference standing in for FlexAttention (no backward on CPU)
    from posenc.bench.cases import flex_training_case

    case = flex_training_case("t5", 16, heads=2, d=4, dtype=torch.float32, device="cpu", backends=("sdpa", "eager"))
    outputs = case.impls["posenc t5 (eager)"]()()
    assert len(outputs) == 5 and outputs[-1].shape[-1] == 2 and outputs[-1].abs().sum() > 0  # T5's table, per head
    rows = {r.impl: r for r in case.run(rounds=1)}
    assert rows["posenc t5 (eager)"].agrees is True and rows["no encoding (eager)"].agrees is True
    assert all(r.median_ms is not None and r.peak_mb is not None for r in rows.values()), rows


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["alibi", "t5", "shaw"])
def test_flex_training_case_on_cuda(name):
    from posenc.bench.cases import flex_training_case

    rows = flex_training_case(name, 256, heads=2, d=16, device="cuda").run(rounds=1, device="cuda")
    assert all(r.agrees is not False and r.median_ms is not None for r in rows), rows
