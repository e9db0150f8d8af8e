"""The atlas: every registered encoding present, the known answers visible, failures contained."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import posenc
from posenc.analysis.atlas import build_atlas, load_experiments
from posenc.analysis.entries import Pictures, analyse_entry
from posenc.analysis.measure import Reference
from posenc.core.registry import EncodingInfo


def _results(atlas_dir: Path) -> dict:
    return json.loads((atlas_dir / "results.json").read_text())


def test_every_registered_encoding_has_an_entry(atlas_dir):
    results = _results(atlas_dir)
    page = (atlas_dir / "index.html").read_text()
    names = [e["name"] for e in results["encodings"]]
    assert names == [info.name for info in posenc.available()]
    listed = [n for s in results["sections"] for n in s["encodings"]]
    assert sorted(listed) == sorted(names)  # each in exactly one section
    for entry in results["encodings"]:
        assert f'id="enc-{entry["name"]}"' in page
        assert html.escape(entry["paper"]) in page or entry["paper"] in page
        assert entry["pictures"] or entry.get("no_picture"), entry["name"]
        for picture in entry["pictures"]:
            assert (atlas_dir / picture["file"]).stat().st_size > 100


def test_survey_sections_in_order(atlas_dir):
    ids = [s["id"] for s in _results(atlas_dir)["sections"]]
    assert ids[:4] == ["s1", "s2", "s3", "s4"]


def test_known_answers_in_the_property_tables(atlas_dir):
    entries = {e["name"]: e for e in _results(atlas_dir)["encodings"]}
    rows = {name: {r["key"]: r for r in e["properties"]} for name, e in entries.items()}
    assert rows["none"]["equivariance"]["value"] < 1e-5 and rows["none"]["equivariance"]["passed"]
    assert rows["sinusoidal"]["equivariance"]["value"] > 1e-3
    assert rows["sinusoidal"]["addition"]["passed"] and rows["sinusoidal"]["addition"]["value"] < 1e-5
    assert entries["sinusoidal"]["data"]["addition_fit"]["is_block_rotation"]
    assert rows["learned"]["addition"]["passed"] is False
    for name in ("rope", "alibi", "t5"):
        assert rows[name]["relative"]["passed"], name
        assert "extrapolation" in rows[name]


def test_padding_probe_section(atlas_dir):
    s2 = next(s for s in _results(atlas_dir)["sections"] if s["id"] == "s2")
    table = s2["analyses"][0]["tables"][0]
    mean = {row[0]: row[-2] for row in table["rows"]}
    assert mean["zero"] > mean["none"] + 0.2


def test_no_experiments_note(atlas_dir):
    page = (atlas_dir / "index.html").read_text()
    assert "none have been run" in page


def test_writes_are_atomic_leftovers_absent(atlas_dir):
    assert not [p for p in atlas_dir.iterdir() if p.name.startswith(".")]


class _Broken(nn.Module):
    def __init__(self, dim: int) -> None:
        raise RuntimeError("constructor exploded")


class _Mystery(nn.Module):
    """An encoding of a family the atlas has never heard of."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ramp = torch.linspace(-1, 1, w).expand(x.shape[0], 1, h, w)
        return torch.cat([x, ramp], dim=1)


class _NeedsSecret(nn.Module):
    def __init__(self, secret_size: int) -> None:
        super().__init__()


def _info(name: str, family: str, cls: type) -> EncodingInfo:
    return EncodingInfo(name=name, family=family, paper="Nobody 2099, arXiv:9999.99999", summary="test", cls=cls)


def test_unknown_and_broken_encodings_are_reported_not_raised(tmp_path, monkeypatch):
    from posenc.testing import examples

    image = examples.Arg("x", "activation", (4,), 1)
    monkeypatch.setitem(examples.SPECS, "broken", examples.Spec({"dim": 4}, lambda: (torch.zeros(1, 2, 8, 8),),
                                                                 examples._call(), (image,)))
    monkeypatch.setitem(examples.SPECS, "mystery", examples.Spec({"channels": 2}, lambda: (torch.zeros(1, 2, 8, 8),),
                                                                  examples._call(), (image,)))
    pics = Pictures(tmp_path, dpi=40)
    ref = Reference(train_steps=5)
    broken = analyse_entry(_info("broken", "vision", _Broken), pics, ref, extrapolate=False)
    assert not broken["pictures"] and "exploded" in broken["errors"][0]  # for the CLI's log
    assert broken["properties"][0]["verdict"] == "n/a" and "log" in broken["no_picture"]
    mystery = analyse_entry(_info("mystery", "mystery", _Mystery), pics, ref, extrapolate=False)
    rows = {r["key"]: r for r in mystery["properties"]}
    assert mystery["pictures"] and not mystery["errors"]
    assert rows["spread"]["verdict"] == "varies with position" and rows["shift"]["verdict"] == "position-aware"
    # an encoding without an example: a stated reason, no exception, no error
    secret = analyse_entry(_info("secret", "hyper", _NeedsSecret), pics, ref, extrapolate=False)
    assert "no example" in secret["no_picture"] and not secret["errors"]
    assert secret["properties"][0]["verdict"] == "n/a" and "no example" in secret["properties"][0]["note"]


def test_experiments_shown_in_their_section(tmp_path):
    exp = tmp_path / "experiments" / "padding_probe"
    exp.mkdir(parents=True)
    (exp / "result.json").write_text(json.dumps({
        "name": "padding_probe", "claim": "zero padding leaks position", "section": "2.5",
        "metrics": {"spearman": {"zero": 0.75, "none": 0.125}, "steps": 40, "_images": {"x": [1.0]}},
        "reference": {"vgg16_padding_spc": 0.742},
    }))
    (tmp_path / "experiments" / "mystery_run").mkdir()
    (tmp_path / "experiments" / "mystery_run" / "result.json").write_text("{not json")
    out = tmp_path / "atlas"
    index = build_atlas(out, quick=True, experiments=tmp_path / "experiments",
                        encodings=[posenc.get("none"), _info("mystery", "mystery", _Mystery)])
    results = _results(out)
    s2 = next(s for s in results["sections"] if s["id"] == "s2")
    assert [e["name"] for e in s2["experiments"]] == ["padding_probe"]
    assert ["spearman.zero", 0.75, "spearman › zero"] in s2["experiments"][0]["metrics"]
    assert not any(key.startswith("_") for key, *_ in s2["experiments"][0]["metrics"])
    assert s2["experiments"][0]["reference"] == [["vgg16_padding_spc", 0.742, "vgg16 padding spc"]]
    page = index.read_text()
    assert "zero padding leaks position" in page and "0.125" in page and "0.742" in page
    other = next(s for s in results["sections"] if s["id"] == "s5")
    assert other["encodings"] == ["mystery"] and other["experiments"][0]["name"] == "mystery_run"


def test_load_experiments_copies_pictures(tmp_path):
    exp = tmp_path / "exp" / "order"
    exp.mkdir(parents=True)
    (exp / "result.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    (exp / "plot.png").write_bytes(b"\x89PNG fake")
    out = tmp_path / "out"
    out.mkdir()
    (found,) = load_experiments(tmp_path / "exp", out)
    # the run's own figure is linked (its fonts are not the atlas's); no headline: no atlas chart
    assert found["section"] == "s1" and (out / found["plots"][0]["file"]).exists() and found["pictures"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "Expecting property name"), ("[1, 2]", "not a result of `posenc run`"),
     ('{"metrics": [1]}', "not a result of `posenc run`")],
)
def test_load_experiments_records_a_damaged_result_as_an_error(tmp_path, text, message):
    # valid JSON that is not an object (or whose metrics is not one) ended the whole atlas with
    # AttributeError: 'list' object has no attribute 'get'; invalid JSON was already an error entry
    exp = tmp_path / "exp" / "order"
    exp.mkdir(parents=True)
    (exp / "result.json").write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    (found,) = load_experiments(tmp_path / "exp", out)
    assert found["name"] == "order" and message in found["error"] and found["metrics"] == []


def test_cli_atlas_prints_index(monkeypatch, capsys, tmp_path):
    from posenc.analysis import atlas
    from posenc.cli import build_parser, main

    assert build_parser().parse_args(["atlas"]).out == "posenc-out/atlas"
    calls = {}

    def fake(out, **kwargs):
        calls.update(kwargs, out=out)
        (Path(out) / "results.json").write_text(json.dumps({"encodings": [], "sections": []}))
        return Path(out) / "index.html"

    monkeypatch.setattr(atlas, "build_atlas", fake)
    assert main(["atlas", "--out", str(tmp_path), "--quick"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    assert calls["quick"] is True and calls["out"] == str(tmp_path)


@pytest.mark.parametrize("bad", ["sections", "encodings"])
def test_results_json_is_standard_json(atlas_dir, bad):
    text = (atlas_dir / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert isinstance(json.loads(text)[bad], list)


class _GridTable(posenc.PositionEncoding):
    """A learned-looking table over a 4x4 patch grid, added to the tokens."""

    hooks = frozenset({"input"})
    model_arguments = ("dim",)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.grid = dim, (4, 4)
        self.table = nn.Parameter(torch.randn(16, dim))

    def encode_input(self, x, *, positions):
        return x + self.table[positions.offset : positions.end]


def test_grid_encodings_get_a_2d_picture(tmp_path):

    entry = analyse_entry(_info("grid_table", "vision", _GridTable), Pictures(tmp_path, dpi=40), Reference(n=8),
                          extrapolate=False)
    assert "grid_table-grid.png" in [p["file"] for p in entry["pictures"]]
    assert (tmp_path / "grid_table-grid.png").exists()


def test_cli_atlas_keeps_an_existing_atlas_without_force(monkeypatch, capsys, tmp_path):
    from posenc.analysis import atlas
    from posenc.cli import main

    (tmp_path / "index.html").write_text("<html>earlier</html>")
    built = []
    def fake(out, **kw):
        built.append(out)
        (Path(out) / "results.json").write_text(json.dumps({"encodings": [], "sections": []}))
        return Path(out) / "index.html"

    monkeypatch.setattr(atlas, "build_atlas", fake)
    assert main(["atlas", "--out", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err and not built
    assert (tmp_path / "index.html").read_text() == "<html>earlier</html>"
    assert main(["atlas", "--out", str(tmp_path), "--force"]) == 0 and built == [str(tmp_path)]


def test_bench_results_appear_with_every_number(tmp_path):
    import json

    from posenc.analysis.atlas import build_atlas

    bench = {
        "machine": {"device": "cpu", "torch": "x", "threads": 2, "quick": True},
        "rows": [
            {"case": "rope n8", "impl": "clone q, k", "median_ms": 0.25, "ratio": 1.0, "reference": "clone q, k", "agrees": None, "note": ""},
            {"case": "rope n8", "impl": "posenc", "median_ms": 0.375, "ratio": 1.5, "reference": "clone q, k", "agrees": True, "note": ""},
            {"case": "rope n8", "impl": "peer", "median_ms": None, "ratio": None, "reference": "clone q, k", "agrees": None, "note": "skipped: not installed"},
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    index = build_atlas(tmp_path / "atlas", quick=True, encodings=[], bench=tmp_path / "bench.json", experiments=tmp_path / "none")
    results = json.loads((tmp_path / "atlas" / "results.json").read_text())
    (section,) = [s for s in results["sections"] if any(a["title"] == "posenc bench" for a in s["analyses"])]
    (analysis,) = [a for a in section["analyses"] if a["title"] == "posenc bench"]
    rows = analysis["tables"][0]["rows"]
    assert rows[1] == ["rope n8", "posenc", 0.375, 1.5, None, None, "clone q, k"]  # no CPU ratio in an older file
    assert rows[2][-1] == "skipped: not installed"
    assert "posenc bench" in index.read_text()


@pytest.mark.parametrize("text", ["[1, 2]", '{"rows": [["rope", "posenc"]]}', '{"rows": 3}'])
def test_a_bench_file_of_another_shape_is_a_value_error(tmp_path, text):
    # valid JSON of another shape raised AttributeError ('list' object has no attribute 'get') or TypeError
    # (list indices must be integers), which ended the whole atlas; the atlas records a ValueError (as for
    # invalid JSON) as the bench section's error
    from posenc.analysis.atlas import bench_analysis

    (tmp_path / "bench.json").write_text(text)
    with pytest.raises(ValueError, match=r"^not a `posenc bench --json` file"):
        bench_analysis(tmp_path / "bench.json")


def test_every_entry_is_measured_or_says_why_and_nothing_failed(atlas_dir):
    from posenc.analysis.atlas import collect_errors

    results = _results(atlas_dir)
    assert collect_errors(results) == []
    for entry in results["encodings"]:
        assert entry["properties"], entry["name"]
        for row in entry["properties"]:
            assert row["value"] is not None or row["verdict"] not in ("", None), (entry["name"], row)
            if row["verdict"] == "n/a":
                assert row["note"], (entry["name"], row)  # the reason
        assert any(r["value"] is not None for r in entry["properties"]), entry["name"]
    page = (atlas_dir / "index.html").read_text()
    for leaked in ("Traceback", "Error:", "Could not measure", "No property could be measured"):
        assert leaked not in page


def test_sections_name_the_missing_experiments_and_the_bench(atlas_dir):
    from posenc.experiments import NAMES

    page = (atlas_dir / "index.html").read_text()
    for name in NAMES:
        assert f"<code>posenc run {name} --quick</code>" in page
    assert "posenc bench --quick --json posenc-out/bench.json" in page
    assert "posenc atlas --results" in page
    assert "headline." not in page  # metric labels are readable


def test_quick_verdicts_are_labelled_with_their_budget(atlas_dir):
    for entry in _results(atlas_dir)["encodings"]:
        for row in entry["properties"]:
            if row["key"] == "extrapolation" and row["value"] is not None:
                assert "(quick" in row["label"] and "quick check: 60 Adam steps" in row["note"]
                assert row["verdict"].endswith("(quick)")


def test_full_results_win_over_quick_ones(tmp_path):
    from posenc.analysis.atlas import default_results_dir

    quick = tmp_path / "experiments" / "extrapolation"
    quick.mkdir(parents=True)
    (quick / "result.json").write_text(json.dumps({"name": "extrapolation", "quick": True, "section": "1.4",
                                                   "metrics": {"headline": {"rope": 0.1}}}))
    out = tmp_path / "atlas"
    index = build_atlas(out, quick=True, experiments=tmp_path / "experiments", results=default_results_dir(),
                        encodings=[posenc.get("rope"), posenc.get("none")])
    results = _results(out)
    runs = [(x["name"], x["kind"]) for s in results["sections"] for x in s["experiments"]]
    assert ("extrapolation", "full") in runs and ("extrapolation", "quick") not in runs
    assert len(runs) == len(list(default_results_dir().glob("*/result.json")))
    rope = {r["key"]: r for r in next(e for e in results["encodings"] if e["name"] == "rope")["properties"]}
    shipped = json.loads((default_results_dir() / "extrapolation" / "result.json").read_text())
    accuracy = shipped["metrics"]["copy_accuracy"]["rope"]
    assert rope["extrapolation_full"]["value"] == pytest.approx(accuracy["4"] / accuracy["1"])
    assert rope["extrapolation"]["verdict"] == "superseded by the full run" and rope["extrapolation"]["passed"] is None
    row = next(r for r in results["comparison"] if r["name"] == "rope")
    assert row["extrapolation_kind"] == "full" and row["extrapolation"] == rope["extrapolation_full"]["value"]
    # the chance-level model learned nothing: no ratio, and no claim that it extrapolates
    none = {r["key"]: r for r in next(e for e in results["encodings"] if e["name"] == "none")["properties"]}
    assert none["extrapolation_full"]["verdict"] == "not learned"
    page = index.read_text()
    assert "full run" in page and "none have been run" not in page
    for picture in (p for s in results["sections"] for x in s["experiments"] for p in x["pictures"]):
        assert (out / picture["file"]).stat().st_size > 1000


def test_figures_follow_the_conventions(tmp_path):
    from posenc.analysis.figures import lines, palette

    for n in (1, 10, 11, 20, 37):
        assert len(set(palette(n))) == n
    pics = Pictures(tmp_path)
    fig, (ax,) = pics.figure(1)
    lines(ax, [0, 1], [(f"curve {i}", [i, i + 1]) for i in range(13)], xlabel="x", ylabel="y")
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(colours)) == 13
    saved = pics.save(fig, "f.png", "test")
    assert saved["width"] >= 640 and saved["min_font_px"] >= 11
    from PIL import Image

    assert Image.open(tmp_path / "f.png").size[0] == 2 * saved["width"]


def test_cli_atlas_logs_failures_and_exits_non_zero(monkeypatch, caplog, capsys, tmp_path):
    import webbrowser

    from posenc.analysis import atlas
    from posenc.cli import main

    def fake(out, **kwargs):
        (Path(out) / "results.json").write_text(json.dumps({
            "encodings": [{"name": "rope", "errors": ["score vs offset: ValueError: boom"]}], "sections": []}))
        return Path(out) / "index.html"

    opened = []
    monkeypatch.setattr(atlas, "build_atlas", fake)
    monkeypatch.setattr(webbrowser, "open", opened.append)
    assert main(["atlas", "--out", str(tmp_path), "--open"]) == 1
    assert "rope: score vs offset: ValueError: boom" in caplog.text
    assert opened == [(tmp_path / "index.html").resolve().as_uri()]
    assert main(["atlas", "--out", str(tmp_path / "x"), "--results", str(tmp_path / "absent")]) == 2
    assert "--results" in capsys.readouterr().err


class _UnitCube(nn.Module):
    """A field-style encoding that refuses coordinates outside [0, 1] (as a hash grid does)."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.min() < 0 or x.max() > 1:
            raise ValueError("`x` must lie in [0, 1]")
        k = torch.arange(1, self.levels + 1, dtype=x.dtype)
        return torch.cat([torch.sin(torch.pi * x[..., :1] * k), torch.cos(torch.pi * x[..., 1:2] * k)], -1)


class _Picky(nn.Module):
    """Accepts only inputs of exactly the example's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != (3, 2):
            raise RuntimeError(f"shape {tuple(x.shape)} unsupported")
        return torch.cat([x, x.square()], -1)


def test_new_encodings_of_known_families_are_drawn_from_their_examples(tmp_path, monkeypatch):
    from posenc.rotary.rope import RotaryPositionEncoding as RoPE
    from posenc.testing import examples

    coords = examples.Arg("x", "coordinates", (), -1)
    inside = lambda: (torch.rand(5, 2, generator=torch.Generator().manual_seed(0)),)
    monkeypatch.setitem(examples.SPECS, "unit_cube", examples.Spec({"levels": 3}, inside, examples._call(), (coords,)))
    picky = examples.Spec({}, lambda: (torch.rand(3, 2),), examples._call(), (coords,))
    monkeypatch.setitem(examples.SPECS, "picky", picky)
    pics, ref = Pictures(tmp_path), Reference(train_steps=5)
    cube = analyse_entry(_info("unit_cube", "coordinate", _UnitCube), pics, ref, extrapolate=False)
    assert cube["pictures"] and not cube["errors"] and "first coordinate swept" in cube["data"]["probe_input"]
    assert cube["properties"][0]["verdict"] == "distinct"
    picky = analyse_entry(_info("picky", "coordinate", _Picky), pics, ref, extrapolate=False)
    assert picky["pictures"] and not picky["errors"] and "example's inputs" in picky["data"]["probe_input"]
    # a new rotary variant with no example of its own goes through the reference Transformer
    variant = analyse_entry(_info("rope_variant", "rotary", RoPE), pics, ref, extrapolate=False)
    rows = {r["key"]: r for r in variant["properties"]}
    assert rows["relative"]["passed"] and not variant["errors"] and "score_vs_offset" in variant["data"]


def test_bench_rows_reach_the_comparison_table():
    from posenc.analysis.atlas import _bench_by_encoding

    table = {"tables": [{"rows": [
        ["rope b1 h4 n256 d64 float32", "clone q, k", 0.2, 1.0, 1.0, None, "clone q, k"],
        ["rope b1 h4 n256 d64 float32", "posenc", 0.3, 1.5, 1.4, 2.0, "clone q, k"],
        ["rope b1 h4 n256 d64 bfloat16", "posenc", 0.3, 9.0, 8.0, None, "clone q, k"],
        ["train step alibi b8 n256 d64 L2", "posenc alibi", 4.0, 1.25, 1.2, None, "no encoding"],
        ["t5 bias h4 n256", "posenc", None, None, None, None, "skipped"],
    ]}]}
    found = _bench_by_encoding(table, ["rope", "alibi", "t5"])
    assert found["rope"]["ratio"] == 1.5 and found["rope"]["peak_mb"] == 2.0
    assert found["alibi"]["ratio"] == 1.25 and "t5" not in found


def test_a_new_experiment_is_listed_with_its_command(tmp_path, monkeypatch):
    from posenc import experiments

    monkeypatch.setattr(experiments, "NAMES", (*experiments.NAMES, "field_fit"))
    index = build_atlas(tmp_path / "atlas", quick=True, encodings=[posenc.get("none")], experiments=tmp_path / "none")
    page = index.read_text()
    assert '<li id="exp-field_fit">' in page and '<a href="#exp-field_fit">' in page
    assert "<code>posenc run field_fit --quick</code>" in page


def test_length_generalization_table_is_sortable_and_read_from_the_result(tmp_path):
    import re

    from posenc.analysis.atlas import task_table
    from posenc.analysis.report import _experiment as render_experiment

    metrics = {"tasks": ["parity_check", "bucket_sort"], "rows": ["rope", "rope+rand"], "train_max": 8, "test_max": 24,
               "seeds": 2, "accuracy": {"parity_check": {"rope": {"mean": 0.5}, "rope+rand": {"mean": 0.25}},
                                        "bucket_sort": {"rope": {"mean": 0.75}, "rope+rand": {"mean": float("nan")}}}}
    table = task_table(metrics)
    assert table["columns"] == ["encoding", "parity_check", "bucket_sort", "mean over tasks"]
    assert table["rows"] == [["rope", 0.5, 0.75, 0.625], ["rope+rand", 0.25, None, None]]
    assert "test lengths 9 to 24" in table["caption"] and "2 seeds" in table["caption"]
    assert task_table({"headline": {}}) is None  # a shard's partial result has no table
    # the shipped run, as the atlas reads it
    run = tmp_path / "runs" / "length_generalization"
    run.mkdir(parents=True)
    result = {"name": "length_generalization", "quick": False, "section": "1.4", "metrics": metrics}
    (run / "result.json").write_text(json.dumps(result).replace("NaN", "null"))
    (out := tmp_path / "out").mkdir()
    (found,) = load_experiments(tmp_path / "runs", out)
    assert found["table"]["rows"][0] == ["rope", 0.5, 0.75, 0.625]
    page = render_experiment(found, "sections.0.experiments.0", True)
    table_html = re.search(r'<table id="table-length_generalization-full" class="sortable">.*?</table>', page).group(0)
    assert table_html.count('<th data-type="num"') == 3 and '<tr data-row="rope+rand">' in table_html
    assert 'data-sort="0.625"' in table_html and 'data-path="sections.0.experiments.0.table.rows.0.3"' in table_html


def test_a_figure_per_rope_variant_on_the_page(atlas_dir):
    page = (atlas_dir / "index.html").read_text()
    s3 = next(s for s in _results(atlas_dir)["sections"] if s["id"] == "s3")
    variants = next(a for a in s3["analyses"] if a.get("id") == "rope-variants")
    assert not variants.get("errors")
    for name in ("linear", "ntk", "dynamic_ntk", "yarn", "llama3", "longrope", "xpos", "p_rope", "rope_mixed"):
        file = f"s3-rope-variant-{name}.png"
        assert file in page and (atlas_dir / file).stat().st_size > 1000, name


def test_build_atlas_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    # called from Python (not the CLI) it failed with a bare "No module named 'matplotlib'" from inside
    import sys

    from posenc.core.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(MissingExtra, match=r'^build_atlas .* needs matplotlib, .*pip install "posenc\[plot\]"$'):
        build_atlas(tmp_path / "atlas", quick=True)
    assert not (tmp_path / "atlas").exists()


def test_a_sweep_figure_says_which_inputs_its_index_runs_over(tmp_path, monkeypatch):
    # the sweep's x axis read 'input index' only: noise_level's 128 levels from 0 to 1 (or a coordinate's
    # range) could not be read off the figure
    from posenc.analysis import entries
    from posenc.core.registry import get

    labels = []
    draw = entries.heatmap

    def spy(ax, matrix, title, xlabel, ylabel, **kwargs):
        labels.append(xlabel)
        return draw(ax, matrix, title, xlabel, ylabel, **kwargs)

    monkeypatch.setattr(entries, "heatmap", spy)
    analyse_entry(get("noise_level"), Pictures(tmp_path, dpi=40), Reference(), extrapolate=False)
    assert "input index (inputs 0 to 1, evenly)" in labels
    labels.clear()
    analyse_entry(get("timestep"), Pictures(tmp_path, dpi=40), Reference(), extrapolate=False)
    assert "input index (inputs 0 to 63, evenly)" in labels
