"""Argument types of the command line: the message names what the option takes."""

from __future__ import annotations

import pytest

from posenc.cli import main


@pytest.mark.parametrize("rounds", ["0", "-1", "x", "1.5"])
def test_rounds_takes_a_positive_integer(capsys, rounds):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", "--rounds", rounds])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--rounds: takes a positive integer" in err and "non-negative" not in err
