"""The up-front size check for materialised tables."""

from __future__ import annotations

import pytest

from posenc.core import memory
from posenc.core.memory import check_table_memory, fits, format_bytes


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(4 * 10**12 * 4) == "14.6 TiB"


def test_check_states_the_size_and_follows_the_limit(monkeypatch):
    assert check_table_memory("a bias", (2, 3), bytes_per_entry=8) == 48
    with pytest.raises(ValueError, match=r"a bias would need 32\.0 GiB \(8x1024x1048576 entries of 4 bytes\)"):
        check_table_memory("a bias", (8, 1024, 2**20))
    monkeypatch.setattr(memory, "MAX_TABLE_BYTES", 100)
    assert fits((25,)) and not fits((26,))
    with pytest.raises(ValueError, match="104 B"):
        check_table_memory("a bias", (26,))


def test_the_text_may_be_formed_only_when_the_table_does_not_fit():
    # a traced length formatted into a string fixes the compiled graph to it: callers pass a function
    asked = []

    def what():
        asked.append(1)
        return "a lazily named bias"

    assert check_table_memory(what, (2, 3)) == 24 and not asked
    with pytest.raises(ValueError, match="a lazily named bias would need 32.0 GiB"):
        check_table_memory(what, (8, 1024, 2**20))
