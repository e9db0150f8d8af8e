"""``posenc atlas``: one HTML page with a section per survey section and an entry per registered encoding.

The entries come from :mod:`posenc.analysis.entries`; this module adds the sections' own analyses
(equivariance across encodings, the padding probe, score-vs-offset curves, RoPE's decay bound), the
experiment results of ``posenc run``, and writes the page.

The encodings are found through ``posenc.available()`` at run time; what is drawn and measured for
each is chosen from its family and hooks (see :mod:`posenc.analysis.measure`), with a generic
fallback for families the atlas has no dedicated picture for. A failure in one entry is reported in
that entry and never stops the page. Output: ``index.html``, its PNG pictures beside it, and
``results.json`` holding every number the page shows (the page is rendered from it). Every file is
written to a temporary name and moved into place, so a reader never sees a half-written page.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from posenc.analysis import measure
from posenc.analysis.entries import analyse_entry, safe_name, write_atomic
from posenc.analysis.figures import Pictures, heatmap, lines, palette, style
from posenc.analysis.probe import PADDINGS, position_probe, probe_cnn
from posenc.analysis.report import render_html
from posenc.analysis.rope_variants import rope_variants_analysis
from posenc.analysis.similarity import roformer_decay_bound
from posenc.core.extras import require
from posenc.core.frequencies import inverse_frequencies
from posenc.core.registry import EncodingInfo, available

SECTIONS = [
    ("s1", "1. Why attention needs position", ("none", "input"),
     ("Self-attention is permutation-equivariant; an absolute encoding breaks the symmetry. Sinusoids "
     "make PE(p+k) a fixed rotation of PE(p) (the addition theorem); a learned table does not.")),
    ("s2", "2. Position for CNNs", ("spatial",),
     ("Coordinate channels, broadcast decoders, learned constants and explicit grids give convolutions "
     "position; even without them, zero padding leaks where the borders are.")),
    ("s3", "3. Encodings for Transformer variants", ("rotary", "bias", "relative", "complex", "context", "vision"),
     ("Relative encodings make attention depend on j - i only: rotations of queries and keys, biases "
     "on the logits, content terms, complex phases, or convolutional context instead of an encoding.")),
    ("s4", "4. Related topics", ("coordinate", "step", "hyper"),
     "Coordinate MLPs (NeRF, Fourier features), step embeddings of iterative networks, hypernetworks."),
]
OTHER_SECTION = ("s5", "Other families", (), "Encodings of families the survey does not cover.")

#: Survey section of each experiment of ``posenc run``; unknown names go by their ``section`` field.
EXPERIMENT_SECTIONS = {
    "order": "s1", "equivariance": "s1", "extrapolation": "s1",
    "coordconv": "s2", "padding_probe": "s2", "height_prior": "s2", "gan_position": "s2",
    "shaw_clip": "s3",
    "fourier_image": "s4", "timestep": "s4",
}


# -- section analyses --------------------------------------------------------------------------------

def _equivariance_analysis(entries: list[dict], pics: Pictures) -> dict:
    rows = [(e["name"], r["value"], r["verdict"]) for e in entries for r in e["properties"]
            if r["key"] == "equivariance" and r["value"] is not None]
    analysis = {
        "title": "Permutation equivariance of the reference encoder",
        "text": "Largest output change when the input tokens are permuted and the outputs permuted back "
                "(2 blocks, width 32, random weights). Zero means the model cannot see order.",
        "pictures": [], "tables": [{"caption": "deviation per encoding", "columns": ["encoding", "deviation", "verdict"],
                                    "rows": [list(r) for r in rows]}],
    }
    if rows:
        fig, (ax,) = pics.figure(1, height=max(3.0, 0.32 * len(rows)))
        values = [max(v, 1e-12) for _, v, _ in rows]
        with style():
            ax.barh([n for n, _, _ in rows], values, color=["#a4161a" if v < 1e-5 else "#176f2c" for v in values])
            ax.set_xscale("log")
            ax.set_xlabel("max |f(Px) - P f(x)| (floored at 1e-12); red: equivariant")
        analysis["pictures"].append(pics.save(fig, "s1-equivariance.png", "permutation deviation per encoding"))
    return analysis


def _offset_analysis(entries: list[dict], pics: Pictures) -> dict | None:
    curves = [(e["name"], e["data"]["score_vs_offset"]) for e in entries if "score_vs_offset" in e["data"]]
    if not curves:
        return None
    fig, axes = pics.figure(len(curves), height=2.6, columns=3)
    colours = palette(len(curves))
    for ax, (name, c), colour in zip(axes, curves, colours):
        mean = torch.tensor(c["per_head"]).mean(0)
        scale = mean.abs().max().clamp_min(1e-12)
        with style():
            ax.plot(c["offsets"], (mean / scale).tolist(), lw=1.6, color=colour)
            ax.set_title(name)
            ax.set_xlabel("offset j - i")
    with style():
        axes[0].set_ylabel("score / max |score|")
    return {
        "title": "Score vs offset of the rotary and bias encodings",
        "text": "The position part of the attention logit as a function of the offset, each curve scaled to "
                "its largest magnitude: RoPE's oscillating decay (RoFormer, figure 2), ALiBi's linear penalty, "
                "T5's bucketed bias.",
        "pictures": [pics.save(fig, "s3-offsets.png", "score vs offset (mean over heads), one panel per encoding; "
                               "overlay any of them in the interactive comparison at the top")],
        "tables": [],
    }


def _rope_bound_analysis(pics: Pictures) -> dict:
    """RoFormer's figure 2: the upper bound of the RoPE score against the relative distance."""
    offsets = torch.arange(0, 257)
    bound = roformer_decay_bound(inverse_frequencies(128, 10000.0), offsets)
    fig, (ax,) = pics.figure(1, height=3.2)
    lines(ax, offsets.tolist(), [(None, bound.tolist())], xlabel="relative distance", ylabel="relative upper bound",
          title="RoPE long-term decay (d = 128, base 10000)")
    return {
        "title": "RoPE's long-term decay (Su et al. 2021, arXiv:2104.09864, figure 2)",
        "text": "The bound (1/(d/2)) sum_j |S_j|, S_j = sum_{l<j} exp(i r theta_l), on the score of two rotated "
                "vectors at relative distance r: it decays as r grows, as the paper's figure shows.",
        "pictures": [pics.save(fig, "s3-rope-decay.png", "upper bound of the RoPE score vs relative distance")],
        "tables": [{"caption": "bound at a few distances", "columns": ["relative distance", "bound"],
                    "rows": [[str(r), bound[r].item()] for r in (0, 16, 64, 256)]}],
    }


def _probe_analysis(pics: Pictures, quick: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    size, count, steps = (24, 8, 60) if quick else (32, 16, 150)
    images = torch.rand(count, 3, size, size, generator=g)
    results = {pad: position_probe(probe_cnn(pad, depth=4), images, steps=steps) for pad in PADDINGS}
    patterns = list(next(iter(results.values())).spearman)
    table = {
        "caption": "Spearman correlation (SPC) of the read-out with each position pattern, on held-out noise images",
        "columns": ["padding", *patterns, "mean SPC", "mean MAE"],
        "rows": [[pad, *[r.spearman[p] for p in patterns], r.mean_spearman, sum(r.mae.values()) / len(r.mae)]
                 for pad, r in results.items()],
    }
    fig, axes = pics.figure(len(results), height=3.2)
    for ax, (pad, r) in zip(axes, results.items()):
        heatmap(ax, r.predictions["horizontal"] - 0.5, f"{pad} padding", "x", "y")
    return {
        "title": "Does zero padding leak position? (Islam et al. 2020, arXiv:2001.08248)",
        "text": "The same random 4-layer CNN with four paddings, frozen; a per-pixel read-out (1x1 convolutions) "
                "is trained to predict position patterns from its features. Only the padding can tell it "
                "where a pixel is.",
        "pictures": [pics.save(fig, "s2-probe.png", "read-out of the horizontal gradient, centred on zero (target: a ramp rising from left to right)")],
        "tables": [table],
    }


# -- experiments -------------------------------------------------------------------------------------

def metric_label(key: str, headline_name: str = "", names: Iterable[str] = ()) -> str:
    """A readable label for a flattened metric key: ``copy_accuracy.rope.4`` -> ``copy accuracy › rope › 4``.

    The headline's parts are named by ``headline_name``; ``names`` (encodings, say) keep their spelling.
    """
    keep = set(names)
    parts = key.split(".")
    if parts[0] == "headline" and headline_name:
        parts[0] = headline_name
    return " › ".join(p if p in keep else p.replace("_", " ") for p in parts)


def _flatten_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(metrics, dict):
        # the headline first; private entries (images, say) are not metrics
        keys = sorted((k for k in metrics if not str(k).startswith("_")), key=lambda k: k != "headline")
        for k in keys:
            out += _flatten_metrics(metrics[k], f"{prefix}.{k}" if prefix else str(k))
    elif (
        isinstance(metrics, (int, float))
        and not isinstance(metrics, bool)
        and (isinstance(metrics, int) or math.isfinite(metrics))
    ):
        out.append((prefix, metrics))
    return out


def _experiment_section(name: str, declared: Any) -> str:
    """The atlas section of an experiment: from its declared survey section ("2.5"), else by name."""
    text = str(declared or "").strip()
    if text[:1] in "1234" and text[:1]:
        return f"s{text[0]}"
    return EXPERIMENT_SECTIONS.get(name, "s5")


def _headline_picture(name: str, data: dict, out: Path, kind: str) -> list[dict]:
    """A readable bar chart of an experiment's headline numbers (one bar per entry)."""
    headline = data.get("metrics", {}).get("headline")
    if not isinstance(headline, dict):
        return []
    values = {str(k): v for k, v in headline.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not values:
        return []
    pics = Pictures(out)
    fig, (ax,) = pics.figure(1, height=max(3.0, 0.34 * len(values) + 1.0))
    with style():
        names = list(values)
        ax.barh(names, [values[k] for k in names], color=palette(len(names)))
        ax.invert_yaxis()
        for y, k in enumerate(names):
            ax.annotate(f"{values[k]:.3g}", (values[k], y), xytext=(4, 0), textcoords="offset points", va="center")
        ax.set_xlabel(str(data.get("metrics", {}).get("headline_name", "headline")))
        ax.set_title(f"{name} ({kind} run)")
    file = f"exp-{safe_name(name)}-{kind}-headline.png"
    return [pics.save(fig, file, f"{name}: the headline numbers of the {kind} run")]


def task_table(metrics: dict) -> dict | None:
    """The task x encoding table of a ``length_generalization`` result, for the page's sortable table.

    One row per encoding (its ``+rand`` version beside it), a column per task holding the mean test
    accuracy over seeds, and the mean over the tasks; None when ``metrics`` has no such table (a shard).
    """
    accuracy = metrics.get("accuracy")
    if not isinstance(accuracy, dict) or not accuracy or not all(isinstance(v, dict) for v in accuracy.values()):
        return None
    tasks = [t for t in metrics.get("tasks") or list(accuracy) if t in accuracy]
    rows = metrics.get("rows") or list(next(iter(accuracy.values())))

    def mean(task: str, row: str) -> float | None:
        cell = accuracy[task].get(row)
        value = cell.get("mean") if isinstance(cell, dict) else cell
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    table = []
    for row in rows:
        values = [mean(t, row) for t in tasks]
        known = [v for v in values if v is not None]
        table.append([str(row), *values, sum(known) / len(known) if known and len(known) == len(values) else None])
    lengths = ""
    if isinstance(metrics.get("train_max"), int) and isinstance(metrics.get("test_max"), int):
        lengths = f" over test lengths {metrics['train_max'] + 1} to {metrics['test_max']}"
    seeds = f", mean over {metrics['seeds']} seeds" if isinstance(metrics.get("seeds"), int) else ""
    return {"caption": f"task × encoding: mean test accuracy{lengths}{seeds} (click a heading to sort)",
            "columns": ["encoding", *tasks, "mean over tasks"], "rows": table}


def load_experiments(directory: Path, out: Path, *, kind: str = "quick") -> list[dict]:
    """Every ``*/result.json`` under ``directory``; the run's own plot is copied beside the page.

    kind: ``"quick"`` (``posenc-out/experiments`` of ``posenc run --quick``) or ``"full"`` (the
    shipped results of ``docs/results``); a result's own ``quick`` field wins when present.
    """
    found = []
    for result in sorted(Path(directory).glob("*/result.json")):
        try:
            data = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError) as err:
            data = err
        if not isinstance(data, dict) or not isinstance(data.get("metrics", {}), dict):
            error = data if isinstance(data, Exception) else "not a result of `posenc run` (a JSON object whose 'metrics' is an object)"
            found.append({"name": result.parent.name, "section": "s5", "source": shown_path(result), "claim": "",
                          "kind": kind, "metrics": [], "pictures": [], "plots": [], "error": str(error)})
            continue
        name = str(data.get("name", result.parent.name))
        run_kind = ("quick" if data["quick"] else "full") if isinstance(data.get("quick"), bool) else kind
        headline_name = str(data.get("metrics", {}).get("headline_name", ""))
        names = [info.name for info in available()]
        metrics = _flatten_metrics(data.get("metrics", {}))[:40]
        plots = []
        for png in sorted(result.parent.glob("*.png"))[:4]:
            target = f"exp-{safe_name(result.parent.name)}-{run_kind}-{safe_name(png.stem)}.png"
            write_atomic(out / target, png.read_bytes())
            plots.append({"file": target, "caption": f"the run's own figure ({png.name})"})
        found.append({"name": name, "section": _experiment_section(name, data.get("section")),
                      "source": shown_path(result),
                      "kind": run_kind, "claim": str(data.get("claim", "")), "paper": str(data.get("paper", "")),
                      "metrics": [[k, v, metric_label(k, headline_name, names)] for k, v in metrics],
                      "reference": [[k, v, metric_label(k, names=names)]
                                    for k, v in _flatten_metrics(data.get("reference", {}))[:20]],
                      "pictures": _headline_picture(name, data, out, run_kind), "plots": plots,
                      "raw": data.get("metrics", {}) if name == "extrapolation" else {},
                      "table": task_table(data.get("metrics", {})) if name == "length_generalization" else None})
    return found


def _known_experiments() -> dict[str, str]:
    """Every experiment of ``posenc run`` and its atlas section (from its declared survey section)."""
    try:
        from posenc.experiments import NAMES, get_experiment
    except ImportError:  # the experiments need extras the atlas does not
        return dict(EXPERIMENT_SECTIONS)
    known = {}
    for name in NAMES:
        try:
            declared = get_experiment(name).section
        except Exception:  # noqa: BLE001 - an experiment that cannot be imported still gets its command
            declared = None
        known[name] = EXPERIMENT_SECTIONS.get(name) or _experiment_section(name, declared)
    return known


def shown_path(path: str | Path) -> str:
    """``path`` as the page shows it: relative to the working directory or the source tree when inside."""
    import posenc

    full = Path(path).resolve()
    for root in (Path.cwd().resolve(), Path(posenc.__file__).resolve().parent.parent):
        if full.is_relative_to(root):
            return str(full.relative_to(root))
    return str(path)


def default_results_dir() -> Path:
    """``docs/results`` of the source tree (the full runs kept in posenc's repository), else of the working
    directory; neither exists where posenc is installed from a wheel and run elsewhere."""
    import posenc

    shipped = Path(posenc.__file__).resolve().parent.parent / "docs" / "results"
    return shipped if shipped.is_dir() else Path("docs/results")


# -- the page ----------------------------------------------------------------------------------------

def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=not enabled, desc="atlas", unit="step", leave=False)
    except ImportError:  # the CLI extra is optional: no bar, no output
        class _Silent:
            def update(self, n: int = 1) -> None: ...
            def set_postfix_str(self, s: str) -> None: ...
            def close(self) -> None: ...

        return _Silent()


BENCH_HOWTO = ("Add it with `posenc bench --quick --json posenc-out/bench.json` (or full sizes without --quick), "
               "then regenerate with `posenc atlas --force` (or point at another file with --bench FILE).")


def bench_analysis(path: Path) -> dict:
    """The rows of a ``posenc bench --json`` file as an atlas table (ratios within each case)."""
    result = json.loads(Path(path).read_text())
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list) or not all(
        isinstance(r, dict) for r in result["rows"]
    ):
        raise ValueError("not a `posenc bench --json` file (a JSON object whose 'rows' is a list of objects)")
    m = result.get("machine", {})
    rows = [
        [r["case"], r["impl"], r["median_ms"], r["ratio"], r.get("cpu_ratio"), r.get("peak_mb"),
         r["reference"] if r["ratio"] is not None else r["note"]]
        for r in result["rows"]
    ]
    text = (f"posenc beside the peer libraries, timed interleaved in one process ({shown_path(path)}); machine: "
            f"{m.get('device', '?')}, torch {m.get('torch', '?')}, {m.get('threads', '?')} threads, "
            f"{'quick sizes' if m.get('quick') else 'full sizes'}. Compare ratios within a case, not times across machines.")
    return {"id": "bench", "title": "posenc bench", "text": text, "pictures": [],
            "tables": [{"caption": "median wall-clock time and its ratio to the case's reference, and the ratio of process CPU time",
                        "columns": ["case", "implementation", "median ms", "ratio", "CPU ratio", "peak MB", "vs"],
                        "rows": rows}]}


def _bench_by_encoding(bench: dict | None, names: list[str]) -> dict[str, dict]:
    """The first posenc row of a case about each encoding: its time ratio and peak memory."""
    found: dict[str, dict] = {}
    if not bench:
        return found
    for case, impl, _ms, ratio, _cpu_ratio, peak, _vs in bench["tables"][0]["rows"]:
        words = str(case).replace("train step ", "").split()
        if not words or not str(impl).startswith("posenc") or ratio is None:
            continue
        if words[0] in names and words[0] not in found:
            found[words[0]] = {"case": case, "ratio": ratio, "peak_mb": peak}
    return found


def _full_extrapolation(exps: list[dict]) -> tuple[dict[str, float], dict[str, dict], str]:
    """From a full extrapolation run on the page, per encoding: copy accuracy at 4L / at L, and the curve."""
    for exp in exps:
        if exp["name"] == "extrapolation" and exp["kind"] == "full":
            raw = exp.get("raw", {})
            length = raw.get("trained_length")
            ratios, curves = {}, {}
            for name, by_multiple in raw.get("copy_accuracy", {}).items():
                at_l, at_4l = by_multiple.get("1"), by_multiple.get("4")
                if isinstance(at_l, (int, float)) and isinstance(at_4l, (int, float)) and at_l >= 0.6:
                    ratios[name] = at_4l / at_l  # below 0.6 at L the task was not learned: no ratio
                points = [(int(k), v) for k, v in by_multiple.items() if isinstance(v, (int, float))]
                if isinstance(length, int) and points:
                    curves[name] = {"lengths": [k * length for k, _ in sorted(points)], "trained_length": length,
                                    "accuracy": [v for _, v in sorted(points)], "budget": f"full run ({exp['source']})"}
            return ratios, curves, exp["source"]
    return {}, {}, ""


def _apply_full_results(entries: list[dict], ratios: dict[str, float], curves: dict[str, dict], source: str) -> None:
    """Where a full run measured an encoding's extrapolation, it replaces the quick verdict."""
    for entry in entries:
        if entry["name"] in curves:
            entry["data"]["extrapolation_full"] = curves[entry["name"]]
            if entry["name"] not in ratios:
                for row in entry["properties"]:
                    if row["key"] == "extrapolation" and row["value"] is not None:
                        row["passed"], row["verdict"] = None, "superseded by the full run"
                        row["note"] = f"the full run ({source}) did not learn the task at the trained length"
                entry["properties"].append(measure.prop(
                    "extrapolation_full", "full run: copy accuracy at 4x the trained length / at the trained length",
                    None, None, "not learned", f"accuracy below 0.6 at the trained length in {source}"))
        if entry["name"] not in ratios:
            continue
        ratio = ratios[entry["name"]]
        for row in entry["properties"]:
            if row["key"] == "extrapolation" and row["value"] is not None:
                row["passed"], row["verdict"] = None, "superseded by the full run"
                row["note"] = "quick check kept for reference; the full-run row is the result"
        holds = ratio >= measure.EXTRAPOLATION_RATIO
        entry["properties"].append(measure.prop(
            "extrapolation_full", "full run: copy accuracy at 4x the trained length / at the trained length", ratio,
            holds, "extrapolates" if holds else "degrades", f"from {source}"))


def _comparison(entries: list[dict], sections: list[dict], bench: dict | None, full: dict[str, float],
                full_curves: dict[str, dict]) -> list[dict]:
    """One row per encoding for the comparison table at the top of the page."""
    section_of = {n: s["id"] for s in sections for n in s["encodings"]}
    speed = _bench_by_encoding(bench, [e["name"] for e in entries])
    rows = []
    for e in entries:
        props = {r["key"]: r for r in e["properties"]}
        rel = props.get("relative")
        kind = e.get("kind", "n/a")
        eq = props.get("equivariance")
        if eq and eq["value"] is not None:
            order = eq["verdict"]
        elif "shift" in props and props["shift"]["value"] is not None:
            order = props["shift"]["verdict"]
        elif "spread" in props:
            order = "position-aware" if props["spread"]["verdict"] == "varies with position" else "uniform"
        else:
            order = "n/a"
        extra, extra_kind = None, ""
        if e["name"] in full:
            extra, extra_kind = full[e["name"]], "full"
        elif e["name"] in full_curves:
            extra_kind = "full: not learned"
        elif e["data"].get("extrapolation"):
            acc = e["data"]["extrapolation"]["accuracy"]
            if acc[0] >= 0.6:
                extra, extra_kind = acc[-1] / acc[0], "quick"
        b = speed.get(e["name"], {})
        rows.append({"name": e["name"], "family": e["family"], "section": section_of.get(e["name"], ""),
                     "enters": e.get("enters") or "", "kind": kind, "order": order,
                     "shift_error": rel["value"] if rel else None, "extrapolation": extra,
                     "extrapolation_kind": extra_kind, "parameters": e.get("parameters"),
                     "bench_ratio": b.get("ratio"), "bench_peak_mb": b.get("peak_mb"), "bench_case": b.get("case", ""),
                     "paper": e["paper"]})
    return rows


def collect_errors(results: dict) -> list[str]:
    """Every failure recorded while building (for the CLI's log; the page never shows them)."""
    errors = [f"{e['name']}: {err}" for e in results["encodings"] for err in e.get("errors", [])]
    for s in results["sections"]:
        for a in s["analyses"]:
            errors += [f"{a['title']}: {err}" for err in a.get("errors", [])]
        errors += [f"experiment {x['name']}: {x['error']}" for x in s["experiments"] if x.get("error")]
    return errors


def build_atlas(
    out: str | Path = "posenc-out/atlas",
    *,
    quick: bool = False,
    experiments: str | Path | None = None,
    encodings: Iterable[EncodingInfo] | None = None,
    progress: bool = False,
    bench: str | Path | None = None,
    results: str | Path | None = None,
) -> Path:
    """Write the atlas into ``out`` and return the path of its ``index.html``.

    quick: smaller sizes and shorter trainings (for tests). experiments: the folder holding
    ``<name>/result.json`` of ``posenc run`` (default ``posenc-out/experiments``). encodings: the
    entries to show (default: every registered encoding). progress: a progress bar on stderr.
    bench: a ``posenc bench --json`` file (default ``posenc-out/bench.json`` when it exists).
    results: a folder of full runs (``docs/results``, see :func:`default_results_dir`) shown as
    such; where it holds an experiment that ``experiments`` holds too, the full run wins.
    Failures are recorded in ``results.json`` (see :func:`collect_errors`), never shown on the page.
    """
    matplotlib = require("matplotlib", extra="plot", feature="build_atlas (the atlas's figures)")
    matplotlib.use("Agg")
    with style():
        return _build(Path(out), quick, experiments, encodings, progress, bench, results)


def _build(out: Path, quick, experiments, encodings, progress, bench, results_dir) -> Path:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    infos = list(encodings) if encodings is not None else available()
    ref = measure.Reference(train_steps=60 if quick else 150, table_len=48 if quick else 64)
    pics = Pictures(out)
    bar = _progress(len(infos) + 3, progress)
    torch_threads = torch.get_num_threads()
    # the models are tiny: one thread is as fast and does not fight other processes for cores
    torch.set_num_threads(1)
    entries = []
    try:
        for info in infos:
            bar.set_postfix_str(info.name)
            entries.append(analyse_entry(info, pics, ref))
            bar.update()
        known = {f for _, _, fams, _ in SECTIONS for f in fams}
        sections = []
        for sid, title, families, text in [*SECTIONS, OTHER_SECTION]:
            names = [e["name"] for e in entries
                     if e["family"] in families or (sid == OTHER_SECTION[0] and e["family"] not in known)]
            sections.append({"id": sid, "title": title, "text": text, "encodings": names, "analyses": [], "experiments": []})
        by_id = {s["id"]: s for s in sections}
        bar.set_postfix_str("equivariance")
        by_id["s1"]["analyses"].append(_equivariance_analysis(entries, pics))
        bar.update()
        bar.set_postfix_str("padding probe")
        try:
            by_id["s2"]["analyses"].append(_probe_analysis(pics, quick))
        except Exception as err:  # noqa: BLE001
            by_id["s2"]["analyses"].append({"title": "padding probe", "text": "", "pictures": [], "tables": [],
                                            "errors": [f"{type(err).__name__}: {err}"]})
        bar.update()
        offsets = _offset_analysis(entries, pics)
        if offsets:
            by_id["s3"]["analyses"].append(offsets)
        by_id["s3"]["analyses"].append(_rope_bound_analysis(pics))
        try:
            by_id["s3"]["analyses"].append(rope_variants_analysis(pics))
        except Exception as err:  # noqa: BLE001 - one failed analysis never stops the page
            by_id["s3"]["analyses"].append({"title": "RoPE variants", "text": "", "pictures": [], "tables": [],
                                            "errors": [f"{type(err).__name__}: {err}"]})
        bench_file = Path(bench) if bench is not None else Path("posenc-out/bench.json")
        bench_data = None
        if bench_file.is_file():
            try:
                bench_data = bench_analysis(bench_file)
            except (OSError, ValueError, KeyError) as err:
                by_id["s3"]["analyses"].append({"id": "bench", "title": "posenc bench", "text": BENCH_HOWTO,
                                                "pictures": [], "tables": [], "errors": [f"{bench_file}: {err}"]})
        if bench_data:
            by_id["s3"]["analyses"].append(bench_data)
        elif not any(a.get("id") == "bench" for a in by_id["s3"]["analyses"]):
            by_id["s3"]["analyses"].append({"id": "bench", "title": "posenc bench: not in this atlas",
                                            "text": f"No benchmark file at {bench_file}. {BENCH_HOWTO}",
                                            "pictures": [], "tables": []})
        exp_dir = Path(experiments) if experiments is not None else Path("posenc-out/experiments")
        exps = load_experiments(exp_dir, out, kind="quick") if exp_dir.is_dir() else []
        if results_dir is not None:
            full = load_experiments(Path(results_dir), out, kind="full")
            full_names = {x["name"] for x in full if x["kind"] == "full"}
            exps = [x for x in exps if x["name"] not in full_names or x["kind"] == "full"] + full
        for exp in exps:
            by_id.get(exp["section"], by_id["s5"])["experiments"].append(exp)
        present = {x["name"] for x in exps}
        known = _known_experiments()
        for s in sections:
            expected = [n for n, sid in known.items() if sid == s["id"]]
            s["experiments_present"] = [x["name"] + f" ({x['kind']} run)" for x in s["experiments"]]
            s["experiments_missing"] = [{"name": n, "command": f"posenc run {n} --quick"}
                                        for n in expected if n not in present]
        s_from = f" from {shown_path(exp_dir)}" + (f" and {shown_path(results_dir)}" if results_dir is not None else "")
        for s in sections:
            s["experiments_source"] = s_from
        ratios, curves, source = _full_extrapolation(exps)
        _apply_full_results(entries, ratios, curves, source)
        for x in exps:
            x.pop("raw", None)
        sections = [s for s in sections
                    if s["id"] != "s5" or s["encodings"] or s["experiments"] or s["experiments_missing"]]
        bar.update()
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    import posenc

    results = {
        "meta": {"version": posenc.__version__, "torch": torch.__version__, "quick": quick,
                 "encodings": len(entries), "seconds": round(time.perf_counter() - start, 1),
                 "budget": measure.extrapolation_budget(ref), "experiments_dir": str(exp_dir),
                 "results_dir": str(results_dir) if results_dir is not None else None},
        "comparison": _comparison(entries, sections, bench_data, ratios, curves),
        "sections": sections,
        "encodings": entries,
    }
    results = _clean(results)
    write_atomic(out / "results.json", json.dumps(results, indent=1, allow_nan=False).encode())
    index = out / "index.html"
    write_atomic(index, render_html(results).encode())
    return index


def _clean(value: Any) -> Any:
    """JSON-ready data: tuples as lists, non-finite floats as None (standard JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return _clean(value.tolist())
    return value
