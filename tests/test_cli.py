"""The command line: `posenc list` and `posenc check`."""

from __future__ import annotations

import pytest

import posenc
from posenc.cli import main


def test_list_prints_every_encoding(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for info in posenc.available():
        assert info.name in out and info.paper in out
    assert f"{len(posenc.available())} encodings" in out


def test_list_one_family(capsys):
    assert main(["list", "--family", "rotary"]) == 0
    out = capsys.readouterr().out
    assert "rope" in out and "alibi" not in out


def test_check_passes_for_every_sequence_encoding(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "all checks passed" in out
    for name in ("none", "sinusoidal", "learned", "rope", "alibi", "t5"):
        assert f"ok    {name}" in out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["nonsense"])
