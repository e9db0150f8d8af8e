"""The atlas page, rendered from its ``results.json`` data alone.

Layout: a persistent sidebar (search box; survey sections, every encoding grouped by family, every
experiment), then the comparison table of every encoding, the interactive comparison (drawn by
:mod:`posenc.analysis.page_script` from data embedded in the page), and the survey's sections.
Anchors are derived from names (``enc-NAME``, ``exp-NAME``, ``s1``...), so deep links survive
regeneration. The page needs no network: its style and script are inline.

Every number on the page is written by :func:`fmt` inside ``<span class="num" data-path="...">``
whose path locates the value in ``results.json``, so the page cannot show a number the JSON lacks
(``tests/analysis/test_report.py`` checks every span against the JSON). Failures recorded in the
JSON are never shown (the CLI logs them).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from posenc.analysis.page_script import CSS, SCRIPT


def fmt(value: Any) -> str:
    """How the page writes a number: ints as they are, floats with 4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    raise TypeError(f"not a number: {value!r}")


def num(value: Any, path: str) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    return f'<span class="num" data-path="{html.escape(path)}">{html.escape(fmt(value))}</span>'


def esc(text: Any) -> str:
    return html.escape(str(text))


def _verdict(row: dict) -> str:
    cls = {True: "pass", False: "fail", None: "na"}[row["passed"]]
    mark = {True: "&#10004; ", False: "&#10008; ", None: ""}[row["passed"]]
    return f'<span class="{cls}">{mark}{esc(row["verdict"])}</span>'


def _details(row: dict, path: str) -> str:
    items = row.get("details") or {}
    if not items:
        return ""
    shown = ", ".join(f"{esc(k.replace('_', ' '))} {num(v, f'{path}.{k}')}" for k, v in items.items())
    return f' <span class="meta">({shown})</span>'


def _properties(rows: list[dict], path: str) -> str:
    out = ['<table class="props"><tr><th>property</th><th>value</th><th>result</th><th>note</th></tr>']
    for i, row in enumerate(rows):
        out.append(
            f"<tr><td>{esc(row['label'])}</td><td>{num(row['value'], f'{path}.{i}.value')}</td>"
            f"<td>{_verdict(row)}</td><td>{esc(row['note'])}{_details(row, f'{path}.{i}.details')}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _pictures(pictures: list[dict]) -> str:
    out = []
    for p in pictures:
        size = (f' width="{int(p["width"])}" height="{int(p["height"])}" data-font-px="{p["min_font_px"]}"'
                if "width" in p else "")
        out.append(f'<figure><img class="fig" src="{esc(p["file"])}" alt="{esc(p["caption"])}"{size} '
                   f'title="click to enlarge"><figcaption class="meta">{esc(p["caption"])}</figcaption></figure>')
    return "".join(out)


def _entry(entry: dict, path: str) -> str:
    parts = [
        (f'<div class="entry" id="enc-{esc(entry["name"])}"><h3>{esc(entry["name"])} '
        f'<a class="anchor" href="#enc-{esc(entry["name"])}" aria-label="link to this entry">#</a></h3>'),
        f'<div class="meta">family <b>{esc(entry["family"])}</b>'
        + (f' &middot; {esc(entry["enters"])}' if entry.get("enters") else "")
        + f' &middot; {esc(entry["paper"])}</div>',
        f"<p>{esc(entry['summary'])}</p>",
    ]
    if entry.get("pictures"):
        parts.append(_pictures(entry["pictures"]))
    else:
        parts.append(f'<p class="na">No figure: {esc(entry.get("no_picture", ""))}.</p>')
    parts.append(_properties(entry.get("properties", []), f"{path}.properties"))
    parts.append("</div>")
    return "".join(parts)


def _table(table: dict, path: str) -> str:
    """A section table: ``{"caption", "columns", "rows": [[label, value, ...]]}``."""
    out = [f"<table><caption>{esc(table['caption'])}</caption><tr>"]
    out += [f"<th>{esc(c)}</th>" for c in table["columns"]]
    out.append("</tr>")
    for i, row in enumerate(table["rows"]):
        cells = [
            f"<td>{num(v, f'{path}.rows.{i}.{j}')}</td>" if j and isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{esc(v) if v is not None else 'n/a'}</td>"
            for j, v in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _sortable(table: dict, path: str, ident: str) -> str:
    """A table a reader sorts by clicking a heading (the page script's ``table.sortable``):
    ``{"caption", "columns", "rows": [[label, number | None, ...]]}``, the first column the label."""
    out = [f'<div class="scroll"><table id="{esc(ident)}" class="sortable"><caption>{esc(table["caption"])}</caption>',
           "<thead><tr>"]
    out += [f'<th data-type="{"num" if j else "text"}" title="click to sort">{esc(c)}</th>'
            for j, c in enumerate(table["columns"])]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(table["rows"]):
        cells = [f'<td data-sort="{esc(row[0])}">{esc(row[0])}</td>']
        cells += [f'<td data-sort="{"" if v is None else repr(float(v))}">{num(v, f"{path}.rows.{i}.{j}")}</td>'
                  for j, v in enumerate(row) if j]
        out.append(f'<tr data-row="{esc(row[0])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _experiment(exp: dict, path: str, anchor: bool) -> str:
    ident = f' id="exp-{esc(exp["name"])}"' if anchor else ""
    kind = exp.get("kind", "quick")
    label = ("full run" if kind == "full" else
             f"quick run (`posenc run {exp['name']} --quick`: a small budget; the full configuration is "
             f"`posenc run {exp['name']}`)")
    parts = [(f'<div class="entry experiment"{ident}><h3>experiment {esc(exp["name"])} '
             f'<span class="tag {esc(kind)}">{esc(kind)}</span></h3>'),
             f'<div class="meta">{esc(label)}; from {esc(exp["source"])}</div>']
    if exp.get("claim"):
        parts.append(f"<p>{esc(exp['claim'])}</p>")
    if exp.get("paper"):
        parts.append(f'<div class="meta">{esc(exp["paper"])}</div>')
    if exp.get("table"):
        parts.append(_sortable(exp["table"], f"{path}.table", f"table-{exp['name']}-{kind}"))
    parts.append(_pictures(exp.get("pictures", [])))
    for p in exp.get("plots", []):
        parts.append(f'<p class="meta"><a href="{esc(p["file"])}">{esc(p["caption"])}</a></p>')
    for field, title in (("metrics", "measured"), ("reference", "the paper's figures")):
        if exp.get(field):
            parts.append(f"<table><caption>{title}</caption><tr><th>metric</th><th>value</th></tr>")
            for i, item in enumerate(exp[field]):
                label_text = item[2] if len(item) > 2 else item[0]
                parts.append(f"<tr><td>{esc(label_text)}</td><td>{num(item[1], f'{path}.{field}.{i}.1')}</td></tr>")
            parts.append("</table>")
    if exp.get("error"):
        parts.append('<p class="na">This result file could not be read (see the atlas command\'s log).</p>')
    parts.append("</div>")
    return "".join(parts)


COLUMNS = [  # key, heading, numeric
    ("name", "encoding", False), ("family", "family", False), ("enters", "how it enters the model", False),
    ("kind", "relative / absolute", False), ("order", "order-aware", False),
    ("shift_error", "shift-invariance error", True), ("extrapolation", "extrapolation: acc. 4L / L", True),
    ("parameters", "parameters", True), ("bench_ratio", "bench time ratio", True),
    ("bench_peak_mb", "bench peak MB", True), ("paper", "paper", False),
]


def _comparison(rows: list[dict]) -> str:
    out = ['<div class="scroll"><table id="comparison-table" class="sortable"><thead><tr>']
    out += [f'<th data-type="{"num" if numeric else "text"}" title="click to sort">{esc(h)}</th>'
            for _, h, numeric in COLUMNS]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        cells = []
        for key, _, numeric in COLUMNS:
            v = r.get(key)
            if key == "name":
                cells.append(f'<td data-sort="{esc(v)}"><a href="#enc-{esc(v)}">{esc(v)}</a></td>')
            elif numeric:
                sort = "" if v is None else repr(float(v))
                extra = ""
                if key == "extrapolation" and r.get("extrapolation_kind"):
                    tag = r["extrapolation_kind"]
                    extra = f' <span class="tag {esc(tag.split(":")[0])}">{esc(tag)}</span>'
                cells.append(f'<td data-sort="{sort}">{num(v, f"comparison.{i}.{key}")}{extra}</td>')
            elif key == "paper":
                short = str(v).split(";")[0].split(" (")[0]
                cells.append(f'<td data-sort="{esc(v)}" title="{esc(v)}">{esc(short)}</td>')
            else:
                cells.append(f'<td data-sort="{esc(v or "")}">{esc(v or "n/a")}</td>')
        out.append(f'<tr data-encoding="{esc(r["name"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _sidebar(results: dict) -> str:
    def item(href: str, text: str) -> str:
        return f'<li><a href="#{esc(href)}">{esc(text)}</a></li>'

    parts = ['<aside id="sidebar"><div class="brand"><a href="#top">posenc atlas</a></div>',
             ('<input id="nav-search" type="search" placeholder="Filter encodings, experiments..." '
             'aria-label="filter the sidebar">'), "<nav>",
             '<div class="group"><h4>Overview</h4><ul>', item("comparison", "Comparison table"),
             item("compare", "Interactive comparison"),
             *([item("bench", "Benchmark (posenc bench)")]
               if any(a.get("id") == "bench" for s in results["sections"] for a in s.get("analyses", [])) else []),
             "</ul></div>",
             '<div class="group"><h4>Survey sections</h4><ul>']
    parts += [item(s["id"], s["title"]) for s in results["sections"]]
    parts.append("</ul></div>")
    families: dict[str, list[str]] = {}
    for e in results["encodings"]:
        families.setdefault(e["family"], []).append(e["name"])
    for family, names in families.items():
        parts.append(f'<div class="group"><h4>{esc(family)}</h4><ul>')
        parts += [item(f"enc-{n}", n) for n in names]
        parts.append("</ul></div>")
    experiments = _experiment_anchors(results)
    if experiments:
        parts.append('<div class="group"><h4>Experiments</h4><ul>')
        parts += [item(f"exp-{n}", n + ("" if present else " (not run)")) for n, present in experiments]
        parts.append("</ul></div>")
    parts.append("</nav></aside>")
    return "".join(parts)


def _experiment_anchors(results: dict) -> list[tuple[str, bool]]:
    """Every experiment (present or missing) once, in page order, with whether its result is shown."""
    seen: dict[str, bool] = {}
    for s in results["sections"]:
        for x in s.get("experiments", []):
            seen.setdefault(x["name"], True)
        for m in s.get("experiments_missing", []):
            seen.setdefault(m["name"], False)
    return list(seen.items())


def _compare_data(results: dict) -> str:
    data = {}
    for e in results["encodings"]:
        d = e.get("data", {})
        item = {k: d[k] for k in ("similarity", "extrapolation", "extrapolation_full") if k in d}
        if "score_vs_offset" in d:
            c = d["score_vs_offset"]
            heads = c["per_head"]
            mean = [sum(h[i] for h in heads) / len(heads) for i in range(len(c["offsets"]))]
            scale = max((abs(v) for v in mean), default=1.0) or 1.0
            item["offset"] = {"offsets": c["offsets"], "score": [round(v / scale, 4) for v in mean]}
        if item:
            data[e["name"]] = item
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _interactive(results: dict) -> str:
    names = [e["name"] for e in results["encodings"]
             if {"similarity", "extrapolation", "score_vs_offset"} & set(e.get("data", {}))]
    default = [n for n in ("rope", "alibi") if n in names] or names[:2]
    boxes = "".join(
        f'<label><input type="checkbox" name="cmp" value="{esc(n)}"{" checked" if n in default else ""}> '
        f"{esc(n)}</label>"
        for n in names)
    return (
        '<section id="compare"><h2>Interactive comparison</h2>'
        "<p>Pick two or more encodings: their score-vs-offset curves (position part of the attention logit, "
        "mean over heads, each scaled to its largest magnitude), their similarity matrices side by side, and "
        "their extrapolation curves (copy-previous-token accuracy against sequence length; "
        f"{esc(results['meta']['budget'])}"
        "; full runs where the page includes them) are drawn from data embedded in this page.</p>"
        f'<div id="cmp-picker">{boxes}</div>'
        '<div class="cmp-panel"><h3>Score vs offset</h3><div id="cmp-offset" class="plot"></div></div>'
        '<div class="cmp-panel"><h3>Similarity matrices</h3><div id="cmp-similarity" class="plot"></div></div>'
        '<div class="cmp-panel"><h3>Extrapolation</h3><div id="cmp-extrapolation" class="plot"></div></div>'
        "</section>"
    )


def _experiments_status(section: dict) -> str:
    present = section.get("experiments_present", [])
    missing = section.get("experiments_missing", [])
    if not present and not missing:
        return ""
    parts = ['<div class="exp-status">']
    source = esc(section.get("experiments_source", ""))
    parts.append(f"<p><b>Experiments of this section</b>{source}: "
                 + (f"present: {esc(', '.join(present))}." if present else "none have been run.") + "</p>")
    if missing:
        parts.append("<ul>")
        parts += [f'<li id="exp-{esc(m["name"])}">{esc(m["name"])}: not run; add it with '
                  f"<code>{esc(m['command'])}</code> and regenerate with <code>posenc atlas --force</code></li>"
                  for m in missing]
        parts.append("</ul>")
    parts.append("</div>")
    return "".join(parts)


def render_html(results: dict) -> str:
    """The whole page from the results dictionary (the content of ``results.json``)."""
    meta = results["meta"]
    full_hint = ("" if meta.get("results_dir") else
                 " The full runs in posenc's source repository (docs/results) are added with "
                 "<code>posenc atlas --results</code> in a checkout, or <code>--results DIR</code> naming that "
                 "folder.")
    body = [
        '<main id="top"><h1>posenc atlas</h1>',
        (f'<p class="meta">posenc {esc(meta["version"])}, torch {esc(meta["torch"])}, '
        f'{num(meta["encodings"], "meta.encodings")} registered encodings, built in '
        f'{num(meta["seconds"], "meta.seconds")} s{" (quick mode)" if meta["quick"] else ""}. '
        f"Verdicts marked quick come from short trainings ({esc(meta['budget'])}); a full run shown on this page "
        f"replaces them.{full_hint}</p>"),
        ('<section id="comparison"><h2>Comparison of every encoding</h2>'
        "<p>Click a heading to sort; click a name for its entry. The extrapolation column is the accuracy at 4x "
        "the trained length over the accuracy at it (full: from a full run on this page; quick: the atlas's own "
        "short training). Bench columns come from <code>posenc bench</code> when the page includes it: the time "
        "ratio is the encoding's time over the reference row of its bench case (a training step without an "
        "encoding, or <code>clone</code> of q and k for the RoPE rotation), so 1 means no cost over it.</p>"),
        _comparison(results.get("comparison", [])), "</section>",
        _interactive(results),
    ]
    anchored: set[str] = set()
    for si, section in enumerate(results["sections"]):
        spath = f"sections.{si}"
        body.append(f'<section><h2 id="{esc(section["id"])}">{esc(section["title"])}</h2><p>{esc(section["text"])}</p>')
        body.append(_experiments_status(section))
        for ai, analysis in enumerate(section.get("analyses", [])):
            ident = f' id="{esc(analysis["id"])}"' if analysis.get("id") else ""
            body.append(f'<div class="entry"{ident}><h3>{esc(analysis["title"])}</h3><p>{esc(analysis["text"])}</p>')
            body.append(_pictures(analysis.get("pictures", [])))
            for ti, table in enumerate(analysis.get("tables", [])):
                body.append(_table(table, f"{spath}.analyses.{ai}.tables.{ti}"))
            if analysis.get("errors"):
                body.append('<p class="na">This analysis failed (see the atlas command\'s log).</p>')
            body.append("</div>")
        for ei, exp in enumerate(section.get("experiments", [])):
            body.append(_experiment(exp, f"{spath}.experiments.{ei}", exp["name"] not in anchored))
            anchored.add(exp["name"])
        for name in section.get("encodings", []):
            index = next(i for i, e in enumerate(results["encodings"]) if e["name"] == name)
            body.append(_entry(results["encodings"][index], f"encodings.{index}"))
        body.append("</section>")
    body.append("</main>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>posenc atlas</title>'
        f"<style>{CSS}</style></head><body>" + _sidebar(results) + "\n".join(body)
        + '<div id="lightbox" hidden></div>'
        + f'<script type="application/json" id="atlas-data">{_compare_data(results)}</script>'
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
