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
from posenc.analysis.entries import Pictures, analyse_entry, heatmap, safe_name, write_atomic
from posenc.analysis.probe import PADDINGS, position_probe, probe_cnn
from posenc.analysis.report import render_html
from posenc.analysis.similarity import roformer_decay_bound
from posenc.core.frequencies import inverse_frequencies
from posenc.core.registry import EncodingInfo, available

SECTIONS = [
    ("s1", "1. Why attention needs position", ("none", "input"),
     "Self-attention is permutation-equivariant; an absolute encoding breaks the symmetry. Sinusoids "
     "make PE(p+k) a fixed rotation of PE(p) (the addition theorem); a learned table does not."),
    ("s2", "2. Position for CNNs", ("spatial",),
     "Coordinate channels, broadcast decoders, learned constants and explicit grids give convolutions "
     "position; even without them, zero padding leaks where the borders are."),
    ("s3", "3. Encodings for Transformer variants", ("rotary", "bias", "relative", "complex", "context", "vision"),
     "Relative encodings make attention depend on j - i only: rotations of queries and keys, biases "
     "on the logits, content terms, complex phases, or convolutional context instead of an encoding."),
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
        fig, (ax,) = pics.figure(1, height=max(2.0, 0.25 * len(rows)))
        values = [max(v, 1e-12) for _, v, _ in rows]
        ax.barh([n for n, _, _ in rows], values, color=["#a4161a" if v < 1e-5 else "#176f2c" for v in values])
        ax.set_xscale("log")
        ax.set_xlabel("max |f(Px) - P f(x)| (floored at 1e-12)", fontsize=8)
        ax.tick_params(labelsize=7)
        analysis["pictures"].append(pics.save(fig, "s1-equivariance.png", "permutation deviation per encoding"))
    return analysis


def _offset_analysis(entries: list[dict], pics: Pictures) -> dict | None:
    curves = [(e["name"], e["data"]["score_vs_offset"]) for e in entries if "score_vs_offset" in e["data"]]
    if not curves:
        return None
    fig, (ax,) = pics.figure(1, height=3.0)
    for name, c in curves:
        mean = torch.tensor(c["per_head"]).mean(0)
        scale = mean.abs().max().clamp_min(1e-12)
        ax.plot(c["offsets"], (mean / scale).tolist(), lw=1.2, label=name)
    ax.set_xlabel("offset j - i", fontsize=8)
    ax.set_ylabel("score / max |score| (mean over heads)", fontsize=8)
    ax.legend(fontsize=7)
    return {
        "title": "Score vs offset of the rotary and bias encodings",
        "text": "The position part of the attention logit as a function of the offset, each curve scaled to "
                "its largest magnitude: RoPE's oscillating decay (RoFormer, figure 2), ALiBi's linear penalty, "
                "T5's bucketed bias.",
        "pictures": [pics.save(fig, "s3-offsets.png", "score vs offset, all rotary and bias encodings")],
        "tables": [],
    }


def _rope_bound_analysis(pics: Pictures) -> dict:
    """RoFormer's figure 2: the upper bound of the RoPE score against the relative distance."""
    offsets = torch.arange(0, 257)
    bound = roformer_decay_bound(inverse_frequencies(128, 10000.0), offsets)
    fig, (ax,) = pics.figure(1, height=2.6)
    ax.plot(offsets.tolist(), bound.tolist(), lw=1.2)
    ax.set_xlabel("relative distance", fontsize=8)
    ax.set_ylabel("relative upper bound", fontsize=8)
    ax.set_title("RoPE long-term decay (d = 128, base 10000)", fontsize=9)
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
    fig, axes = pics.figure(len(results), height=2.4)
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

def _flatten_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(metrics, dict):
        # the headline first; private entries (images, say) are not metrics
        keys = sorted((k for k in metrics if not str(k).startswith("_")), key=lambda k: k != "headline")
        for k in keys:
            out += _flatten_metrics(metrics[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(metrics, (int, float)) and not isinstance(metrics, bool):
        if isinstance(metrics, int) or math.isfinite(metrics):
            out.append((prefix, metrics))
    return out


def _experiment_section(name: str, declared: Any) -> str:
    """The atlas section of an experiment: from its declared survey section ("2.5"), else by name."""
    text = str(declared or "").strip()
    if text[:1] in "1234" and text[:1]:
        return f"s{text[0]}"
    return EXPERIMENT_SECTIONS.get(name, "s5")


def load_experiments(directory: Path, out: Path) -> list[dict]:
    """Every ``*/result.json`` under ``directory``, with its PNGs copied beside the page."""
    found = []
    for result in sorted(directory.glob("*/result.json")):
        try:
            data = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError) as err:
            found.append({"name": result.parent.name, "section": "s5", "source": str(result), "claim": "",
                          "metrics": [], "pictures": [], "error": str(err)})
            continue
        name = str(data.get("name", result.parent.name))
        metrics = _flatten_metrics(data.get("metrics", {}))[:40]
        pictures = []
        for png in sorted(result.parent.glob("*.png"))[:4]:
            target = f"exp-{safe_name(result.parent.name)}-{safe_name(png.stem)}.png"
            write_atomic(out / target, png.read_bytes())
            pictures.append({"file": target, "caption": png.name})
        found.append({"name": name, "section": _experiment_section(name, data.get("section")), "source": str(result),
                      "claim": str(data.get("claim", "")), "paper": str(data.get("paper", "")),
                      "metrics": [list(m) for m in metrics],
                      "reference": [list(m) for m in _flatten_metrics(data.get("reference", {}))[:20]],
                      "pictures": pictures})
    return found


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


def bench_analysis(path: Path) -> dict:
    """The rows of a ``posenc bench --json`` file as an atlas table (ratios within each case)."""
    result = json.loads(Path(path).read_text())
    m = result.get("machine", {})
    rows = [
        [r["case"], r["impl"], r["median_ms"], r["ratio"], r["reference"] if r["ratio"] is not None else r["note"]]
        for r in result["rows"]
    ]
    text = (f"posenc beside the peer libraries, timed interleaved in one process ({path}); machine: "
            f"{m.get('device', '?')}, torch {m.get('torch', '?')}, {m.get('threads', '?')} threads, "
            f"{'quick sizes' if m.get('quick') else 'full sizes'}. Compare ratios within a case, not times across machines.")
    return {"title": "posenc bench", "text": text, "pictures": [],
            "tables": [{"caption": "median time and ratio to the case's reference",
                        "columns": ["case", "implementation", "median ms", "ratio", "vs"], "rows": rows}]}


def build_atlas(
    out: str | Path = "posenc-out/atlas",
    *,
    quick: bool = False,
    experiments: str | Path | None = None,
    encodings: Iterable[EncodingInfo] | None = None,
    progress: bool = False,
    bench: str | Path | None = None,
) -> Path:
    """Write the atlas into ``out`` and return the path of its ``index.html``.

    quick: smaller sizes and shorter trainings (for tests). experiments: the folder holding
    ``<name>/result.json`` of ``posenc run`` (default ``posenc-out/experiments``). encodings: the
    entries to show (default: every registered encoding). progress: a progress bar on stderr.
    bench: a ``posenc bench --json`` file shown in the section on Transformer variants (default
    ``posenc-out/bench.json`` when it exists).
    """
    import matplotlib

    matplotlib.use("Agg")
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    infos = list(encodings) if encodings is not None else available()
    ref = measure.Reference(train_steps=60 if quick else 150, table_len=48 if quick else 64)
    pics = Pictures(out, dpi=60 if quick else 90)
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
                                            "errors": [str(err)]})
        bar.update()
        offsets = _offset_analysis(entries, pics)
        if offsets:
            by_id["s3"]["analyses"].append(offsets)
        by_id["s3"]["analyses"].append(_rope_bound_analysis(pics))
        bench_file = Path(bench) if bench is not None else Path("posenc-out/bench.json")
        if bench_file.is_file():
            by_id["s3"]["analyses"].append(bench_analysis(bench_file))
        exp_dir = Path(experiments) if experiments is not None else Path("posenc-out/experiments")
        exps = load_experiments(exp_dir, out) if exp_dir.is_dir() else []
        for exp in exps:
            by_id.get(exp["section"], by_id["s5"])["experiments"].append(exp)
        for s in sections:
            if s["id"] != "s5" and not any(e["section"] == s["id"] for e in exps):
                s["experiments_note"] = (f"No experiment results for this section in {exp_dir} "
                                         "(none have been run: `posenc run all --quick`).")
        sections = [s for s in sections if s["id"] != "s5" or s["encodings"] or s["experiments"]]
        bar.update()
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    import posenc

    results = {
        "meta": {"version": posenc.__version__, "torch": torch.__version__, "quick": quick,
                 "encodings": len(entries), "seconds": round(time.perf_counter() - start, 1)},
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

