"""A size check for tables an encoding must materialise (``(n, m)`` biases and their indices).

A bias for a million queries and keys needs terabytes; allocating it fails deep inside the allocator
(or swaps a machine to a halt). Encodings call :func:`check_table_memory` with the shape they are
about to build, so such a request fails up front with a ``ValueError`` that states the memory the
table would need.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: The largest table (in bytes) an encoding builds in one piece: 16 GiB. Raise it for a machine
#: with more memory (``posenc.core.memory.MAX_TABLE_BYTES = 64 * 2**30``); it is read at each call.
MAX_TABLE_BYTES = 16 * 2**30


def format_bytes(size: float) -> str:
    """``size`` in the largest binary unit that keeps it >= 1, e.g. ``"14.6 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table_bytes(shape: tuple[int, ...], *, bytes_per_entry: int = 4) -> int:
    """Bytes a table of ``shape`` needs."""
    return math.prod(shape) * bytes_per_entry


def fits(shape: tuple[int, ...], *, bytes_per_entry: int = 4) -> bool:
    """Whether a table of ``shape`` stays within :data:`MAX_TABLE_BYTES` (optional caches use this)."""
    return table_bytes(shape, bytes_per_entry=bytes_per_entry) <= MAX_TABLE_BYTES


def check_table_memory(what: str | Callable[[], str], shape: tuple[int, ...], *, bytes_per_entry: int = 4) -> int:
    """Raise ``ValueError`` when a table of ``shape`` (``bytes_per_entry`` each) exceeds
    :data:`MAX_TABLE_BYTES`; return its size in bytes. ``what`` names the table and its sizes, or is a
    function giving that text, called only when the table does not fit: under ``torch.compile`` with
    dynamic shapes, formatting a symbolic length into a string fixes the graph to that length, so an
    encoding that named its sizes up front recompiled the model for every sequence length."""
    size = table_bytes(shape, bytes_per_entry=bytes_per_entry)
    if size > MAX_TABLE_BYTES:
        what = what() if callable(what) else what
        raise ValueError(
            f"{what} would need {format_bytes(size)} ({'x'.join(map(str, shape))} entries of {bytes_per_entry} bytes), "
            f"more than the {format_bytes(MAX_TABLE_BYTES)} posenc builds in one piece "
            "(posenc.core.memory.MAX_TABLE_BYTES): use shorter sequences, attend in blocks, or raise that limit"
        )
    return size
