"""The atlas in a real browser, read as a reader would: it loads cleanly, navigates, compares, and is legible.

Screenshots of the top of the page, of a deep link and of the interactive comparison are written to
``$POSENC_SCREENSHOTS`` (default: the test's temporary folder) for the record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import posenc
from posenc.analysis.browser import check_page, find_chromium, screenshot

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium is not installed (`make test` installs Debian's chromium)"
)

#: Runs after the page's load event; returns what the assertions below need.
INSPECT = """function () {
  function box(e) { var r = e.getBoundingClientRect(); return [r.width, r.height]; }
  var out = {};
  out.sidebar = Array.prototype.map.call(document.querySelectorAll("#sidebar a[href^='#']"), function (a) {
    var id = a.getAttribute("href").slice(1);
    return [id, !!document.getElementById(id), getComputedStyle(document.getElementById("sidebar")).position];
  });
  out.rows = Array.prototype.map.call(document.querySelectorAll("#comparison-table tbody tr"), function (r) {
    return r.getAttribute("data-encoding");
  });
  out.images = Array.prototype.filter.call(document.images, function (i) { return !i.closest("#lightbox"); })
    .map(function (i) {
      var b = box(i);
      return {src: i.getAttribute("src"), natural: i.naturalWidth, width: b[0], height: b[1],
              declared: +i.getAttribute("width") || 0, font: +i.getAttribute("data-font-px") || 0};
    });
  out.svgs = Array.prototype.map.call(document.querySelectorAll("svg"), box);
  out.svgFonts = Array.prototype.map.call(document.querySelectorAll(".plot svg text"), function (t) {
    return parseFloat(getComputedStyle(t).fontSize);
  });
  // the overlay: one encoding, then a second one
  var compare = document.getElementById("compare");
  var boxes = Array.prototype.slice.call(compare.querySelectorAll("input[name=cmp]"));
  boxes.forEach(function (b) { if (b.checked) { b.checked = false; b.dispatchEvent(new Event("change")); } });
  var pick = function (name) {
    var b = boxes.filter(function (x) { return x.value === name; })[0];
    b.checked = true; b.dispatchEvent(new Event("change"));
  };
  pick("rope");
  var before = +compare.getAttribute("data-redraws");
  var curvesBefore = document.querySelectorAll("#cmp-offset path[data-series]").length;
  pick("alibi");
  out.overlay = {before: before, after: +compare.getAttribute("data-redraws"), curvesBefore: curvesBefore,
                 curves: Array.prototype.map.call(document.querySelectorAll("#cmp-offset path[data-series]"),
                   function (p) { return [p.getAttribute("data-series"), p.getAttribute("stroke")]; }),
                 matrices: document.querySelectorAll("#cmp-similarity svg").length,
                 extrapolation: document.querySelectorAll("#cmp-extrapolation path[data-series]").length};
  // the sidebar filter
  var search = document.getElementById("nav-search");
  search.value = "alibi"; search.dispatchEvent(new Event("input"));
  out.filtered = Array.prototype.filter.call(document.querySelectorAll("#sidebar li"), function (li) {
    return !li.hidden; }).map(function (li) { return li.textContent.trim(); });
  search.value = ""; search.dispatchEvent(new Event("input"));
  // sorting by the parameters column puts the largest first after two clicks
  var heads = document.querySelectorAll("#comparison-table th");
  var col = Array.prototype.map.call(heads, function (h) { return h.textContent; }).indexOf("parameters");
  heads[col].click(); heads[col].click();
  out.sorted = Array.prototype.map.call(document.querySelectorAll("#comparison-table tbody tr"), function (r) {
    return r.cells[col].getAttribute("data-sort"); });
  return out;
}"""


@pytest.fixture(scope="module")
def page(atlas_dir, tmp_path_factory):
    """The atlas copied elsewhere (the folder must be self-contained), loaded once."""
    copy = tmp_path_factory.mktemp("copied") / "atlas"
    shutil.copytree(atlas_dir, copy)
    return copy, check_page(copy / "index.html", inspect=INSPECT)


def test_atlas_loads_cleanly(page, atlas_dir):
    _, check = page
    assert check.images == (atlas_dir / "index.html").read_text().count("<img ") and check.images > 5
    assert check.ok, (check.broken, check.errors)


def test_every_image_and_svg_renders(page):
    _, check = page
    for image in check.checks["images"]:
        assert image["natural"] > 0 and image["width"] > 0 and image["height"] > 0, image
    assert len(check.checks["svgs"]) >= 3
    assert all(w > 0 and h > 0 for w, h in check.checks["svgs"])


def test_sidebar_links_every_encoding_and_experiment(page):
    from posenc.experiments import NAMES

    _, check = page
    links = {target: exists for target, exists, _ in check.checks["sidebar"]}
    assert all(links.values()), [t for t, ok in links.items() if not ok]
    assert {f"enc-{info.name}" for info in posenc.available()} <= set(links)
    assert {f"exp-{name}" for name in NAMES} <= set(links)
    assert {"s1", "s2", "s3", "s4", "comparison", "compare"} <= set(links)
    assert {position for _, _, position in check.checks["sidebar"]} == {"fixed"}


def test_comparison_table_has_a_row_per_encoding_and_sorts(page):
    _, check = page
    assert check.checks["rows"] == [info.name for info in posenc.available()]
    values = [float(v) for v in check.checks["sorted"] if v]
    assert values == sorted(values, reverse=True) and len(values) > 5


def test_overlay_redraws_when_a_second_encoding_is_selected(page):
    _, check = page
    overlay = check.checks["overlay"]
    assert overlay["after"] == overlay["before"] + 1
    assert overlay["curvesBefore"] == 1 and [name for name, _ in overlay["curves"]] == ["rope", "alibi"]
    assert len({colour for _, colour in overlay["curves"]}) == 2
    assert overlay["matrices"] == 2 and overlay["extrapolation"] >= 2


def test_sidebar_filter(page):
    _, check = page
    assert check.checks["filtered"] == ["alibi"]


def test_figures_are_legible(page):
    """>= 640 px wide, >= 2 device pixels per displayed pixel, no text below 11 px at the displayed size."""
    _, check = page
    figures = [i for i in check.checks["images"] if i["declared"]]
    assert len(figures) > 20
    for image in figures:
        scale = image["width"] / image["declared"]
        assert image["width"] >= 640, image
        assert image["natural"] >= 2 * image["width"] - 1, image
        assert image["font"] * scale >= 11, image
    assert check.checks["svgFonts"] and min(check.checks["svgFonts"]) >= 11


def test_screenshots_for_the_record(page, tmp_path):
    copy, _ = page
    out = Path(os.environ.get("POSENC_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    index = copy / "index.html"
    shots = [screenshot(index, out / f"atlas-{fragment or 'top'}.png", fragment=fragment)
             for fragment in ("", "compare", "enc-rope", "s2")]
    # a page drawn blank compresses to a few kilobytes; these hold text and figures
    assert all(s.stat().st_size > 50_000 for s in shots), [s.stat().st_size for s in shots]
    (out / "atlas-screenshots.json").write_text(json.dumps([str(s) for s in shots]))


#: Sorts length_generalization's task x encoding table by its last column ("mean over tasks"), descending.
SORT_TASK_TABLE = """function () {
  var table = document.querySelector("table[id^='table-length_generalization']");
  if (!table) { return null; }
  var order = function () {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.getAttribute("data-row"); });
  };
  var heads = table.querySelectorAll("th"), col = heads.length - 1, out = {before: order()};
  out.heading = heads[col].textContent;
  heads[col].click(); heads[col].click();
  out.after = order();
  out.values = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute("data-sort"); });
  out.arrow = heads[col].className;
  return out;
}"""


def test_length_generalization_table_sorts_by_a_column(atlas_dir, tmp_path):
    """The page with the shipped length_generalization run: clicking a task column reorders the encodings."""
    from posenc.analysis.atlas import default_results_dir, load_experiments
    from posenc.analysis.report import render_html

    shipped = default_results_dir() / "length_generalization"
    if not (shipped / "result.json").exists():
        pytest.skip("no shipped length_generalization result (docs/results/length_generalization/result.json)")
    (runs := tmp_path / "runs").mkdir()
    shutil.copytree(shipped, runs / "length_generalization")
    page_dir = tmp_path / "atlas"
    shutil.copytree(atlas_dir, page_dir)
    results = json.loads((page_dir / "results.json").read_text())
    (found,) = load_experiments(runs, page_dir, kind="full")
    results["sections"][0]["experiments"].append(found)
    (page_dir / "index.html").write_text(render_html(results))
    check = check_page(page_dir / "index.html", inspect=SORT_TASK_TABLE)
    assert check.ok, (check.broken, check.errors)
    sort = check.checks
    rows = json.loads((shipped / "result.json").read_text())["metrics"]["rows"]
    assert sort["before"] == rows and sort["heading"] == "mean over tasks"
    assert sorted(sort["after"]) == sorted(rows) and sort["after"] != sort["before"]
    values = [float(v) for v in sort["values"] if v]
    assert values == sorted(values, reverse=True) and len(values) == len(rows)
    assert sort["arrow"] == "desc"


def test_a_corrupted_image_fails_the_check(atlas_dir, tmp_path):
    shutil.copytree(atlas_dir, tmp_path / "atlas")
    victim = min((tmp_path / "atlas").glob("*.png"))
    victim.write_bytes(b"this is not a png")
    check = check_page(tmp_path / "atlas" / "index.html")
    assert not check.ok and check.broken == [victim.name]


def test_a_missing_image_and_a_script_error_fail_the_check(tmp_path):
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
        '<img src="missing.png"><script>undefinedFunction();</script></body></html>'
    )
    check = check_page(tmp_path / "index.html")
    assert check.broken == ["missing.png"]
    assert any("missing.png" in e for e in check.errors)
    assert any("undefinedFunction" in e for e in check.errors)
