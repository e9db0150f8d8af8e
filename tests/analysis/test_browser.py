"""The atlas in a real browser: every image loads and the page logs no error; a broken image is caught."""

from __future__ import annotations

import shutil

import pytest

from posenc.analysis.browser import check_page, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium is not installed (`make test` installs Debian's chromium)"
)


def test_atlas_loads_cleanly(atlas_dir, tmp_path):
    shutil.copytree(atlas_dir, tmp_path / "atlas")
    check = check_page(tmp_path / "atlas" / "index.html")
    assert check.images == (atlas_dir / "index.html").read_text().count("<img ") and check.images > 5
    assert check.ok, (check.broken, check.errors)


def test_a_corrupted_image_fails_the_check(atlas_dir, tmp_path):
    shutil.copytree(atlas_dir, tmp_path / "atlas")
    victim = sorted((tmp_path / "atlas").glob("*.png"))[0]
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
