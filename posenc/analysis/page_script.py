"""The atlas page's inline style and script (vanilla JavaScript, no network, works from ``file://``).

The script filters the sidebar as one types, sorts every ``table.sortable`` (the comparison table,
an experiment's task × encoding table) by a clicked column,
enlarges a clicked figure, and draws the interactive comparison as SVG from the JSON embedded in
``<script id="atlas-data">``: score-vs-offset curves overlaid, similarity matrices side by side and
extrapolation curves, for the encodings ticked. Every SVG text is 12 px; colours never repeat
within a plot (the same rule as :func:`posenc.analysis.figures.palette`). After each redraw the
``#compare`` element's ``data-redraws`` counter goes up (the browser test watches it).
"""

from __future__ import annotations

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;line-height:1.5;font-size:16px}
#sidebar{position:fixed;top:0;left:0;bottom:0;width:260px;overflow-y:auto;background:#f6f7f9;border-right:1px solid #dde;padding:12px 14px}
#sidebar .brand a{font-weight:700;font-size:18px;color:#1d1d1f;text-decoration:none}
#nav-search{width:100%;margin:10px 0;padding:6px 8px;font-size:14px;border:1px solid #bbc;border-radius:4px}
#sidebar h4{margin:12px 0 2px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#667}
#sidebar ul{list-style:none;margin:0;padding:0}
#sidebar li a{display:block;padding:1px 6px;border-radius:3px;color:#1a4f8a;text-decoration:none;font-size:14px}
#sidebar li a:hover,#sidebar li a.current{background:#e2e8f2}
main{margin-left:260px;padding:8px 32px 64px;max-width:1240px}
h1{margin:.4em 0 .2em} h2{border-bottom:2px solid #dde;padding-bottom:.2em;margin-top:2em}
h3{margin:.2em 0} .entry{border:1px solid #dde;border-radius:6px;padding:.8em 1em;margin:1em 0;scroll-margin-top:12px}
section h2{scroll-margin-top:12px} .meta{color:#556;font-size:14px}
figure{margin:.6em 0} img.fig{max-width:100%;height:auto;border:1px solid #eee;cursor:zoom-in}
table{border-collapse:collapse;margin:.5em 0;font-size:14px} td,th{border:1px solid #dde;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f1f3f6} caption{text-align:left;color:#556;font-size:14px;padding:.2em 0}
.pass{color:#176f2c;font-weight:600} .fail{color:#a4161a;font-weight:600} .na{color:#667}
.num{font-variant-numeric:tabular-nums} .scroll{overflow-x:auto}
#comparison-table{font-size:13px} #comparison-table td{white-space:nowrap}
#comparison-table td:nth-child(3),#comparison-table td:nth-child(4){white-space:normal;min-width:8em}
table.sortable th{cursor:pointer;user-select:none} table.sortable th.asc:after{content:" \\25B2"} table.sortable th.desc:after{content:" \\25BC"}
.tag{font-size:12px;border-radius:3px;padding:0 4px;border:1px solid #99a;color:#445;font-weight:400}
.tag.full{border-color:#176f2c;color:#176f2c} .tag.quick{border-color:#a86b00;color:#a86b00}
.anchor{font-size:14px;color:#99a;text-decoration:none} code{background:#f1f3f6;padding:0 3px;border-radius:3px}
#cmp-picker{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:14px;margin:.5em 0}
.cmp-panel{margin:1em 0} .plot svg{display:block;background:#fff} #cmp-similarity{display:flex;flex-wrap:wrap;gap:12px}
.plot svg text{font-size:12px;font-family:system-ui,sans-serif;fill:#1d1d1f}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.8);display:flex;align-items:center;justify-content:center;z-index:10;cursor:zoom-out}
#lightbox[hidden]{display:none} #lightbox img{max-width:96vw;max-height:96vh;background:#fff}
.exp-status{background:#f8f8fb;border-left:3px solid #99a;padding:.3em .8em;margin:.8em 0}
@media (max-width:900px){#sidebar{position:static;width:auto;height:auto;border-right:0}main{margin-left:0;padding:8px 12px}}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var BASE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
              "#dbdb8d", "#9edae5"];
  function palette(n) {
    var out = BASE.slice(0, n);
    for (var i = BASE.length; i < n; i++) {
      out.push("hsl(" + Math.round(360 * (i - BASE.length + 0.5) / (n - BASE.length)) + ",80%," + (i % 2 ? 35 : 50) + "%)");
    }
    return out;
  }
  function el(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function ticks(lo, hi, count) {
    var span = hi - lo || 1, step = Math.pow(10, Math.floor(Math.log10(span / count)));
    [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= count) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) { out.push(+v.toPrecision(6)); }
    return out;
  }

  // -- sidebar filter ---------------------------------------------------------------------------
  var search = document.getElementById("nav-search");
  if (search) {
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase();
      document.querySelectorAll("#sidebar li").forEach(function (li) {
        li.hidden = q !== "" && li.textContent.toLowerCase().indexOf(q) < 0;
      });
      document.querySelectorAll("#sidebar .group").forEach(function (g) {
        var h = g.querySelector("h4"), family = h && h.textContent.toLowerCase().indexOf(q) >= 0;
        if (family && q !== "") { g.querySelectorAll("li").forEach(function (li) { li.hidden = false; }); }
        g.hidden = !g.querySelector("li:not([hidden])");
      });
    });
  }

  // -- sortable comparison table ----------------------------------------------------------------
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc"), numeric = th.getAttribute("data-type") === "num";
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
          if (numeric) {
            if (x === "" || y === "") { return (x === "") - (y === ""); }  // n/a last either way
            return asc ? x - y : y - x;
          }
          return asc ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // -- click to enlarge -------------------------------------------------------------------------
  var box = document.getElementById("lightbox");
  if (box) {
    document.querySelectorAll("img.fig").forEach(function (img) {
      img.addEventListener("click", function () {
        var big = document.createElement("img");
        big.src = img.src;
        big.alt = img.alt;
        box.textContent = "";
        box.appendChild(big);
        box.hidden = false;
      });
    });
    box.addEventListener("click", function () { box.hidden = true; });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") { box.hidden = true; } });
  }

  // -- the sidebar marks where the reader is ----------------------------------------------------
  var links = {};
  document.querySelectorAll("#sidebar a[href^='#']").forEach(function (a) { links[a.getAttribute("href").slice(1)] = a; });
  if ("IntersectionObserver" in window) {
    var current = null;
    var spy = new IntersectionObserver(function (seen) {
      seen.forEach(function (s) {
        if (!s.isIntersecting || !links[s.target.id]) { return; }
        if (current) { current.classList.remove("current"); }
        current = links[s.target.id];
        current.classList.add("current");
      });
    }, {rootMargin: "0px 0px -70% 0px"});
    Object.keys(links).forEach(function (id) { var t = document.getElementById(id); if (t) { spy.observe(t); } });
  }

  // -- interactive comparison -------------------------------------------------------------------
  var holder = document.getElementById("atlas-data"), compare = document.getElementById("compare");
  if (!holder || !compare) { return; }
  var data = JSON.parse(holder.textContent);

  function linePlot(target, series, xlabel, ylabel, empty) {
    target.textContent = "";
    if (!series.length) { var p = document.createElement("p"); p.className = "na"; p.textContent = empty; target.appendChild(p); return; }
    var W = 720, H = 340, L = 64, R = 170, T = 14, B = 48;
    var xs = [], ys = [];
    series.forEach(function (s) { xs = xs.concat(s.x); ys = ys.concat(s.y.filter(function (v) { return v !== null; })); });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
    if (x1 - x0 < 1e-9) { x0 -= 1; x1 += 1; }
    var sx = function (v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (v) { return T + (1 - (v - y0) / (y1 - y0)) * (H - T - B); };
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    ticks(x0, x1, 8).forEach(function (v) {
      svg.appendChild(el("line", {x1: sx(v), x2: sx(v), y1: T, y2: H - B, stroke: "#eee"}));
      svg.appendChild(el("text", {x: sx(v), y: H - B + 16, "text-anchor": "middle"}, String(v)));
    });
    ticks(y0, y1, 6).forEach(function (v) {
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#eee"}));
      svg.appendChild(el("text", {x: L - 6, y: sy(v) + 4, "text-anchor": "end"}, String(v)));
    });
    svg.appendChild(el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#999"}));
    svg.appendChild(el("text", {x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle"}, xlabel));
    svg.appendChild(el("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
                                transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, ylabel));
    var colours = palette(series.length);
    series.forEach(function (s, i) {
      var d = "", pen = false;
      s.x.forEach(function (x, j) {
        var y = s.y[j];
        if (y === null) { pen = false; return; }
        d += (pen ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1) + " ";
        pen = true;
      });
      svg.appendChild(el("path", {d: d, fill: "none", stroke: colours[i], "stroke-width": 2, "data-series": s.name,
                                  "stroke-dasharray": s.dashed ? "6 3" : "none"}));
      svg.appendChild(el("line", {x1: W - R + 12, x2: W - R + 36, y1: T + 10 + 18 * i, y2: T + 10 + 18 * i,
                                  stroke: colours[i], "stroke-width": 3, "stroke-dasharray": s.dashed ? "6 3" : "none"}));
      svg.appendChild(el("text", {x: W - R + 42, y: T + 14 + 18 * i}, s.name));
    });
    target.appendChild(svg);
  }

  function heat(name, sim) {
    var m = sim.matrix, n = m.length, S = 220, c = S / n;
    var svg = el("svg", {width: S + 20, height: S + 44, role: "img", "data-series": name});
    svg.appendChild(el("text", {x: 10, y: 14}, name));
    for (var i = 0; i < n; i++) {
      for (var j = 0; j < n; j++) {
        var v = Math.max(-1, Math.min(1, m[i][j])), r, g, b;
        if (v >= 0) { r = 255; g = b = Math.round(255 * (1 - v)); } else { b = 255; r = g = Math.round(255 * (1 + v)); }
        svg.appendChild(el("rect", {x: 10 + j * c, y: 22 + i * c, width: c + 0.3, height: c + 0.3,
                                    fill: "rgb(" + r + "," + g + "," + b + ")"}));
      }
    }
    var label = el("text", {x: 10, y: S + 40}, "");
    label.textContent = sim.what.length > 34 ? sim.what.slice(0, 33) + "\u2026" : sim.what;
    var title = el("title", {}, sim.what);
    svg.appendChild(title);
    svg.appendChild(label);
    return svg;
  }

  var redraws = 0;
  function redraw() {
    var chosen = Array.prototype.slice.call(compare.querySelectorAll("input[name=cmp]:checked"))
      .map(function (b) { return b.value; });
    var offset = chosen.filter(function (n) { return data[n] && data[n].offset; }).map(function (n) {
      return {name: n, x: data[n].offset.offsets, y: data[n].offset.score};
    });
    linePlot(document.getElementById("cmp-offset"), offset, "offset j - i (key - query)", "score / max |score|",
             "None of the chosen encodings has a position term on the attention logits.");
    var sims = document.getElementById("cmp-similarity");
    sims.textContent = "";
    chosen.forEach(function (n) { if (data[n] && data[n].similarity) { sims.appendChild(heat(n, data[n].similarity)); } });
    if (!sims.childNodes.length) { sims.textContent = "None of the chosen encodings has a similarity matrix."; }
    var extra = [];
    chosen.forEach(function (n) {
      var d = data[n] || {};
      var multiples = function (c) { return c.lengths.map(function (l) { return l / c.trained_length; }); };
      if (d.extrapolation) { extra.push({name: n + " (quick)", x: multiples(d.extrapolation), y: d.extrapolation.accuracy, dashed: !!d.extrapolation_full}); }
      if (d.extrapolation_full) { extra.push({name: n + " (full)", x: multiples(d.extrapolation_full), y: d.extrapolation_full.accuracy}); }
    });
    linePlot(document.getElementById("cmp-extrapolation"), extra, "sequence length / trained length", "copy accuracy",
             "None of the chosen encodings has an extrapolation measurement.");
    redraws += 1;
    compare.setAttribute("data-redraws", String(redraws));
    compare.setAttribute("data-selected", chosen.join(","));
  }
  compare.querySelectorAll("input[name=cmp]").forEach(function (b) { b.addEventListener("change", redraw); });
  redraw();
})();
"""
