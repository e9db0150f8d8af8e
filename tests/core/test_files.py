"""Result files: written atomically, with the mode the umask gives (not mkstemp's private 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from posenc.core.files import atomic_write_bytes, current_umask


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = tmp_path / "sub" / "result.json"
        atomic_write_bytes(path, b"{}")
        atomic_write_bytes(path, b"{\"a\": 1}")  # replacing keeps the mode too
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"{\"a\": 1}"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    atomic_write_bytes(path, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_an_error_names_the_file_asked_for_not_the_temporary(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as error:  # replacing a folder by the file fails
        atomic_write_bytes(folder, b"{}")
    assert error.value.filename == str(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary left
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("this user writes into any folder")
    with pytest.raises(PermissionError) as error:  # the temporary cannot be created beside it
        atomic_write_bytes(locked / "bench.json", b"{}")
    assert error.value.filename == str(locked / "bench.json")
