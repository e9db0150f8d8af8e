"""The atlas page, rendered from its ``results.json`` data alone.

Every number on the page is written by :func:`fmt` inside ``<span class="num" data-path="...">``
whose path locates the value in ``results.json``, so the page cannot show a number the JSON lacks
(``tests/analysis/test_report.py`` checks every span against the JSON).
"""

from __future__ import annotations

import html
import math
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin:.2em 0} .entry{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
.meta{color:#666;font-size:.9em} img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}
th{background:#f6f6f6} .pass{color:#176f2c;font-weight:600} .fail{color:#a4161a;font-weight:600} .na{color:#777}
.error{color:#a4161a} nav a{margin-right:1em} .num{font-variant-numeric:tabular-nums}
"""


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
    if not rows:
        return '<p class="na">No property could be measured for this entry.</p>'
    out = ["<table><tr><th>property</th><th>value</th><th>result</th><th>note</th></tr>"]
    for i, row in enumerate(rows):
        out.append(
            f"<tr><td>{esc(row['label'])}</td><td>{num(row['value'], f'{path}.{i}.value')}</td>"
            f"<td>{_verdict(row)}</td><td>{esc(row['note'])}{_details(row, f'{path}.{i}.details')}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _pictures(pictures: list[dict]) -> str:
    return "".join(
        f'<figure><img src="{esc(p["file"])}" alt="{esc(p["caption"])}"><figcaption class="meta">{esc(p["caption"])}'
        "</figcaption></figure>"
        for p in pictures
    )


def _entry(entry: dict, path: str) -> str:
    parts = [
        f'<div class="entry" id="enc-{esc(entry["name"])}"><h3>{esc(entry["name"])}</h3>',
        f'<div class="meta">family <b>{esc(entry["family"])}</b> &middot; {esc(entry["paper"])}</div>',
        f"<p>{esc(entry['summary'])}</p>",
    ]
    if entry.get("pictures"):
        parts.append(_pictures(entry["pictures"]))
    else:
        parts.append(f'<p class="na">No picture for this family yet ({esc(entry.get("no_picture", ""))}).</p>')
    parts.append(_properties(entry.get("properties", []), f"{path}.properties"))
    for error in entry.get("errors", []):
        parts.append(f'<p class="error">Could not measure: {esc(error)}</p>')
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


def _experiment(exp: dict, path: str) -> str:
    parts = [f'<div class="entry"><h3>experiment {esc(exp["name"])}</h3>']
    if exp.get("claim"):
        parts.append(f"<p>{esc(exp['claim'])}</p>")
    parts.append(f'<div class="meta">from {esc(exp["source"])}</div>')
    parts.append(_pictures(exp.get("pictures", [])))
    if exp.get("paper"):
        parts.append(f'<div class="meta">{esc(exp["paper"])}</div>')
    for field, title in (("metrics", "measured"), ("reference", "the paper's figures")):
        if exp.get(field):
            parts.append(f"<table><caption>{title}</caption><tr><th>metric</th><th>value</th></tr>")
            for i, (key, value) in enumerate(exp[field]):
                parts.append(f"<tr><td>{esc(key)}</td><td>{num(value, f'{path}.{field}.{i}.1')}</td></tr>")
            parts.append("</table>")
    if exp.get("error"):
        parts.append(f'<p class="error">Could not read: {esc(exp["error"])}</p>')
    parts.append("</div>")
    return "".join(parts)


def render_html(results: dict) -> str:
    """The whole page from the results dictionary (the content of ``results.json``)."""
    meta = results["meta"]
    body = [
        "<h1>posenc atlas</h1>",
        f'<p class="meta">posenc {esc(meta["version"])}, torch {esc(meta["torch"])}, '
        f'{num(meta["encodings"], "meta.encodings")} registered encodings, built in '
        f'{num(meta["seconds"], "meta.seconds")} s{" (quick mode)" if meta["quick"] else ""}.</p>',
        "<p>One section per section of the survey; in each, the section's measurements, then one entry per "
        "registered encoding of the families it covers, with a picture, its measured properties and its paper.</p>",
        "<nav>" + "".join(f'<a href="#{esc(s["id"])}">{esc(s["title"])}</a>' for s in results["sections"]) + "</nav>",
    ]
    for si, section in enumerate(results["sections"]):
        spath = f"sections.{si}"
        body.append(f'<h2 id="{esc(section["id"])}">{esc(section["title"])}</h2><p>{esc(section["text"])}</p>')
        for ai, analysis in enumerate(section.get("analyses", [])):
            body.append(f'<div class="entry"><h3>{esc(analysis["title"])}</h3><p>{esc(analysis["text"])}</p>')
            body.append(_pictures(analysis.get("pictures", [])))
            for ti, table in enumerate(analysis.get("tables", [])):
                body.append(_table(table, f"{spath}.analyses.{ai}.tables.{ti}"))
            for error in analysis.get("errors", []):
                body.append(f'<p class="error">Could not measure: {esc(error)}</p>')
            body.append("</div>")
        for ei, exp in enumerate(section.get("experiments", [])):
            body.append(_experiment(exp, f"{spath}.experiments.{ei}"))
        if section.get("experiments_note"):
            body.append(f'<p class="meta">{esc(section["experiments_note"])}</p>')
        for ni, name in enumerate(section.get("encodings", [])):
            index = next(i for i, e in enumerate(results["encodings"]) if e["name"] == name)
            body.append(_entry(results["encodings"][index], f"encodings.{index}"))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>posenc atlas</title>'
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
