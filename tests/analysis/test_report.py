"""results.json holds every number the page shows."""

from __future__ import annotations

import json
import re

import pytest

from posenc.analysis.report import fmt, render_html

NUM = re.compile(r'<span class="num" data-path="([^"]+)">([^<]*)</span>')


def _resolve(data, path: str):
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_every_number_on_the_page_is_in_results_json(atlas_dir):
    results = json.loads((atlas_dir / "results.json").read_text())
    page = (atlas_dir / "index.html").read_text()
    spans = NUM.findall(page)
    assert len(spans) > 20
    for path, shown in spans:
        assert fmt(_resolve(results, path)) == shown, path
    # outside those spans and the papers' ids, the page's visible text holds no measured number
    text = re.sub(r"<style>.*?</style>|<script[^>]*>.*?</script>", "", NUM.sub("", page), flags=re.DOTALL)
    text = re.sub(r"<[^>]+>", " ", text)
    meta = results["meta"]
    text = text.replace(f"posenc {meta['version']}", "").replace(f"torch {meta['torch']}", "")
    for entry in results["encodings"]:
        text = text.replace(entry["paper"], "").replace(entry["name"], "").replace(entry["summary"], "")
    stray = re.findall(r"\d+\.\d+e?-?\d*", text)
    assert not [s for s in stray if not re.fullmatch(r"\d{4}\.\d{4,5}", s)], stray[:10]


def test_page_is_rendered_from_results_json_alone(atlas_dir):
    results = json.loads((atlas_dir / "results.json").read_text())
    assert render_html(results) == (atlas_dir / "index.html").read_text()


def test_fmt():
    assert fmt(3) == "3" and fmt(0.123456) == "0.1235" and fmt(1.5e-13) == "1.5e-13"
    assert fmt(True) == "yes"
    with pytest.raises(TypeError):
        fmt("1")
