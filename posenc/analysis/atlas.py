"""``posenc atlas``: one HTML page with a section per survey section and an entry per registered encoding.

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
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from posenc.analysis import measure
from posenc.analysis.probe import PADDINGS, position_probe, probe_cnn
from posenc.analysis.report import render_html
from posenc.analysis.similarity import roformer_decay_bound, score_matrix, similarity_matrix
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

SEQUENCE_HOOK_FAMILIES = ("none", "input", "rotary", "bias", "relative", "complex", "context")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Pictures:
    """Saves matplotlib figures as PNGs in the output folder (Agg canvas, atomic writes)."""

    def __init__(self, out: Path, dpi: int) -> None:
        self.out, self.dpi = out, dpi

    def figure(self, panels: int = 1, *, height: float = 2.8):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.6 * panels, height), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        return fig, list(axes)

    def save(self, fig, name: str, caption: str) -> dict:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        _write_atomic(self.out / name, buf.getvalue())
        return {"file": name, "caption": caption}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _heatmap(ax, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str, cmap: str = "RdBu_r") -> None:
    data = matrix.detach().double().cpu().numpy()
    lim = float(abs(data).max()) or 1.0
    im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)


# -- one entry ---------------------------------------------------------------------------------------

def _sequence_entry(info: EncodingInfo, entry: dict, pics: _Pictures, ref: measure.Reference, extrapolate: bool) -> bool:
    """Measure a sequence encoding in the reference Transformer; False when it is not one."""
    encoder = measure.build_sequence_model(info.cls, ref, causal=False)
    model = encoder or measure.build_sequence_model(info.cls, ref, causal=True)
    if model is None:
        return False
    enc = model.position
    hooks = set(enc.hooks)
    stem = _safe_name(info.name)
    rows = entry["properties"]
    data = entry["data"]
    if encoder is not None:
        rows.append(measure.equivariance_row(encoder, info.family, ref))
    else:
        rows.append(measure.prop("equivariance", "permutation deviation of the reference encoder", None, None,
                                 "n/a", "causal only: a causal mask alone already breaks the symmetry"))
    table = measure.input_table(enc, ref.table_len) if "input" in hooks else None
    if table is not None:
        fig, (a, b) = pics.figure(2)
        _heatmap(a, table.T, "encoding PE(p)", "position p", "feature")
        _heatmap(b, similarity_matrix(table), "similarity PE(i).PE(j)", "j", "i")
        entry["pictures"].append(pics.save(fig, f"{stem}-table.png", "the encoding's table and its similarity matrix"))
        try:
            row, fit = measure.addition_row(enc, table, ref)
            rows.append(row)
            data["addition_fit"] = fit
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"addition theorem: {err}")
    grid = measure._grid(enc)
    if {"rotary", "bias"} & hooks:
        try:
            # encodings tied to a patch grid accept exactly its tokens
            length = ref.table_len if grid is None else int(getattr(enc, "num_prefix_tokens", 0) or 0) + grid[0] * grid[1]
            offsets, curves = measure.bias_curves(enc, length)
            data["score_vs_offset"] = {"offsets": offsets, "per_head": curves}
            fig, (ax,) = pics.figure(1, height=2.6)
            for h, curve in enumerate(curves[:8]):
                ax.plot(offsets, curve, lw=1, label=f"head {h}" if len(curves) > 1 else None)
            ax.set_xlabel("offset j - i (key - query)", fontsize=8)
            ax.set_ylabel("score" if "rotary" in hooks else "bias (logits)", fontsize=8)
            ax.set_title("position score vs offset" + (" (q = k = 1)" if "rotary" in hooks else ""), fontsize=9)
            if 1 < len(curves) <= 8:
                ax.legend(fontsize=6)
            entry["pictures"].append(pics.save(fig, f"{stem}-offset.png", "attention score due to position vs offset"))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"score vs offset: {err}")
    if grid is not None:
        try:
            _grid_picture(enc, grid, entry, pics, stem)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"2-D picture: {err}")
    if {"rotary", "bias", "value"} & hooks:
        try:
            rows.append(measure.relative_row(enc, ref))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"shift invariance: {err}")
    if not entry["pictures"] and encoder is not None:
        _equivariance_picture(encoder, entry, pics, ref, stem)
    if extrapolate:
        try:
            rows.append(measure.extrapolation_row(info.cls, ref))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"extrapolation: {err}")
    return True


@torch.no_grad()
def _grid_picture(enc, grid: tuple[int, int], entry: dict, pics: _Pictures, stem: str) -> None:
    """The centre patch's similarity (input hook) or score (rotary/bias hooks) to every patch, as an image."""
    gh, gw = grid
    prefix = int(getattr(enc, "num_prefix_tokens", 0) or 0)
    n = prefix + gh * gw
    centre = prefix + (gh // 2) * gw + gw // 2
    panels = []
    table = measure.input_table(enc, n) if "input" in enc.hooks else None
    if table is not None:
        sim = similarity_matrix(table, normalize=True)[centre, prefix:]
        panels.append((sim, "cosine similarity of PE to the centre patch's"))
    if {"rotary", "bias"} & set(enc.hooks):
        scores = score_matrix(enc, n).mean(0)[centre, prefix:]
        panels.append((scores, "position score of the centre query"))
    if not panels:
        return
    fig, axes = pics.figure(len(panels), height=2.8)
    for ax, (values, title) in zip(axes, panels):
        _heatmap(ax, values.reshape(gh, gw), title, "patch column", "patch row", cmap="viridis")
    entry["pictures"].append(pics.save(fig, f"{stem}-grid.png", f"on the {gh}x{gw} patch grid, from its centre patch"))


@torch.no_grad()
def _equivariance_picture(model, entry: dict, pics: _Pictures, ref: measure.Reference, stem: str) -> None:
    tokens = torch.randint(0, ref.vocab, (1, ref.n), generator=torch.Generator().manual_seed(ref.seed))
    perm = torch.arange(ref.n).flip(0)
    out = model.forward_features(tokens)[0]
    back = model.forward_features(tokens[:, perm])[0][perm.argsort()]
    fig, (a, b) = pics.figure(2)
    _heatmap(a, out.T, "f(x)", "token", "feature")
    _heatmap(b, back.T, "reverse, f, reverse back", "token", "feature")
    entry["pictures"].append(pics.save(fig, f"{stem}-equivariance.png",
                                       "outputs for a sequence and for its reverse (re-ordered): equal when equivariant"))


def _generic_entry(info: EncodingInfo, entry: dict, pics: _Pictures) -> None:
    try:
        module = measure.build_generic(info)
        label, x, out = measure.generic_output(module, info.family)
    except Exception as err:  # noqa: BLE001 - reported in the entry
        entry["no_picture"] = f"{type(err).__name__}: {err}"[:300]
        return
    stem = _safe_name(info.name)
    entry["data"]["probe_input"] = label
    entry["data"]["output_shape"] = list(out.shape)
    if out.ndim == 4:
        maps = out[0, -min(4, out.shape[1]) :]
        fig, axes = pics.figure(len(maps), height=2.6)
        for c, (ax, m) in enumerate(zip(axes, maps)):
            _heatmap(ax, m, f"channel {out.shape[1] - len(maps) + c}", "x", "y", cmap="viridis")
        caption = f"last channels of the output for {label}"
    else:
        table = out.reshape(-1, out.shape[-1])[:128]
        fig, (a, b) = pics.figure(2)
        _heatmap(a, table.T, "output per input row", "input row", "feature")
        _heatmap(b, similarity_matrix(table), "similarity of rows", "j", "i")
        caption = f"output and its similarity matrix for {label}"
    entry["pictures"].append(pics.save(fig, f"{stem}-generic.png", caption))
    try:
        entry["properties"].extend(measure.generic_rows(module, x, out))
    except Exception as err:  # noqa: BLE001
        entry["errors"].append(str(err))


def analyse_entry(info: EncodingInfo, pics: _Pictures, ref: measure.Reference, *, extrapolate: bool = True) -> dict:
    """The atlas entry of one registry entry: pictures, property rows, extra data, errors."""
    entry = {
        "name": info.name, "family": info.family, "paper": info.paper, "summary": info.summary,
        "pictures": [], "properties": [], "data": {}, "errors": [],
    }
    handled = False
    try:
        is_sequence = info.family in SEQUENCE_HOOK_FAMILIES or bool(getattr(info.cls, "hooks", None))
        handled = is_sequence and _sequence_entry(info, entry, pics, ref, extrapolate)
        entry["data"]["reference_transformer"] = bool(handled)
    except Exception as err:  # noqa: BLE001 - one broken encoding must not stop the atlas
        entry["errors"].append(f"the 1-D reference Transformer cannot use it: {type(err).__name__}: {err}"[:300])
    if not entry["pictures"]:
        try:
            _generic_entry(info, entry, pics)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"{type(err).__name__}: {err}"[:300])
    if not entry["pictures"] and "no_picture" not in entry:
        entry["no_picture"] = "nothing the atlas knows how to draw"
    return entry


# -- section analyses --------------------------------------------------------------------------------

def _equivariance_analysis(entries: list[dict], pics: _Pictures) -> dict:
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


def _offset_analysis(entries: list[dict], pics: _Pictures) -> dict | None:
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


def _rope_bound_analysis(pics: _Pictures) -> dict:
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


def _probe_analysis(pics: _Pictures, quick: bool) -> dict:
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
        _heatmap(ax, r.predictions["horizontal"] - 0.5, f"{pad} padding", "x", "y")
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
            target = f"exp-{_safe_name(result.parent.name)}-{_safe_name(png.stem)}.png"
            _write_atomic(out / target, png.read_bytes())
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


def build_atlas(
    out: str | Path = "posenc-out/atlas",
    *,
    quick: bool = False,
    experiments: str | Path | None = None,
    encodings: Iterable[EncodingInfo] | None = None,
    progress: bool = False,
) -> Path:
    """Write the atlas into ``out`` and return the path of its ``index.html``.

    quick: smaller sizes and shorter trainings (for tests). experiments: the folder holding
    ``<name>/result.json`` of ``posenc run`` (default ``posenc-out/experiments``). encodings: the
    entries to show (default: every registered encoding). progress: a progress bar on stderr.
    """
    import matplotlib

    matplotlib.use("Agg")
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    infos = list(encodings) if encodings is not None else available()
    ref = measure.Reference(train_steps=60 if quick else 150, table_len=48 if quick else 64)
    pics = _Pictures(out, dpi=60 if quick else 90)
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
    _write_atomic(out / "results.json", json.dumps(results, indent=1, allow_nan=False).encode())
    index = out / "index.html"
    _write_atomic(index, render_html(results).encode())
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

