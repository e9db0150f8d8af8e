"""Open a rendered page in headless Chromium and report broken images and page errors.

A copy of the page with a small script inserted first in its ``<head>`` is loaded from the same
folder (so relative image paths resolve). The script records every ``error`` event (a script
error, or a resource such as an image that fails to load or decode) and, once the page has loaded,
the images that did not load (``naturalWidth == 0``), into a ``<pre id="posenc-page-check">``
element; ``--dump-dom`` prints the DOM after the load, and the console lines Chromium logs to
stderr are checked for errors too.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--allow-file-access-from-files",
    "--virtual-time-budget=10000",
    "--enable-logging=stderr",
    "--v=0",
)

CHECK_SCRIPT = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push("resource failed: " + (t.src || t.href)); }
    else { errors.push("script error: " + (e.message || "unknown")); }
  }, true);
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                       .map(function (i) { return i.getAttribute("src"); });
    var checks = null;
    try { checks = (%(extra)s)(); } catch (err) { errors.push("check script error: " + err); }
    var out = document.createElement("pre");
    out.id = "posenc-page-check";
    out.textContent = JSON.stringify({images: images.length, broken: broken, errors: errors, checks: checks});
    document.body.appendChild(out);
  });
})();
</script>"""

_CONSOLE = re.compile(r":CONSOLE\(\d+\)\]\s*(.*)")


@dataclass
class PageCheck:
    """What the browser saw."""

    images: int
    broken: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  #: error events and console errors
    checks: Any = None  #: what the ``inspect`` script returned after the page loaded

    @property
    def ok(self) -> bool:
        return self.images > 0 and not self.broken and not self.errors


def find_chromium() -> str | None:
    """The Chromium executable (``POSENC_CHROMIUM`` wins), or None."""
    override = os.environ.get("POSENC_CHROMIUM")
    if override:
        return override
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(
    index: str | Path, *, chromium: str | None = None, timeout: float = 120.0, inspect: str | None = None,
    window: tuple[int, int] = (1400, 1000),
) -> PageCheck:
    """Load ``index`` in headless Chromium; count images, broken images and errors.

    inspect: the source of a JavaScript function run after the page's load event (after the page's
    own scripts); its JSON-ready return value comes back as :attr:`PageCheck.checks`.
    window: the browser window's size in CSS pixels (layout depends on it).
    """
    index = Path(index).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium executable found (install Debian's `chromium`, or set POSENC_CHROMIUM)")
    page = index.read_text(encoding="utf-8")
    marker = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    at = marker.end() if marker else 0
    probe = index.with_name(f".{index.stem}.check.html")
    script = CHECK_SCRIPT % {"extra": inspect or "function () { return null; }"}
    probe.write_text(page[:at] + script + page[at:], encoding="utf-8")
    profile = index.parent / ".chromium-profile"
    try:
        run = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", "--dump-dom",
             probe.as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        probe.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    found = re.search(r'<pre id="posenc-page-check">(.*?)</pre>', run.stdout, flags=re.DOTALL)
    if not found:
        tail = (run.stderr or "")[-800:]
        return PageCheck(0, [], [f"the page check did not run (exit {run.returncode}): {tail}"])
    report = json.loads(html.unescape(found.group(1)))
    errors = list(report["errors"])
    for line in run.stderr.splitlines():
        match = _CONSOLE.search(line)
        if match and ("error" in line.lower() or "failed" in line.lower()):
            errors.append("console: " + match.group(1)[:300])
    return PageCheck(report["images"], list(report["broken"]), errors, report.get("checks"))


def screenshot(index: str | Path, path: str | Path, *, fragment: str = "", chromium: str | None = None,
               window: tuple[int, int] = (1400, 1000), timeout: float = 120.0) -> Path:
    """Write a PNG screenshot of the page ``index`` scrolled to ``#fragment`` (when given) to ``path``.

    Headless Chromium draws a blank picture of a page it scrolled to a fragment itself, so the page
    is shown in a full-window frame of a small wrapper page written beside it (and removed).
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium executable found (install Debian's `chromium`, or set POSENC_CHROMIUM)")
    index, path = Path(index).resolve(), Path(path).resolve()
    wrapper = index.with_name(f".{index.stem}.shot.html")
    target = html.escape(index.name + (f"#{fragment}" if fragment else ""))
    wrapper.write_text('<!DOCTYPE html><html><body style="margin:0"><iframe src="' + target
                       + '" style="border:0;width:100vw;height:100vh"></iframe></body></html>', encoding="utf-8")
    profile = index.parent / ".chromium-profile-shot"
    path.unlink(missing_ok=True)
    try:
        subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--window-size={window[0]},{window[1]}", f"--screenshot={path}", wrapper.as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        wrapper.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {index}#{fragment}")
    return path
