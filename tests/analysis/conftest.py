"""One quick atlas rendered once for every test that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def atlas_dir(tmp_path_factory) -> Path:
    from posenc.analysis.atlas import build_atlas

    out = tmp_path_factory.mktemp("atlas")
    # an empty experiments folder: the page must say that none have been run
    empty = tmp_path_factory.mktemp("no-experiments")
    build_atlas(out, quick=True, experiments=empty)
    return out
