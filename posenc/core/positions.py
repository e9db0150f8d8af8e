"""Resolving the keyword-only ``positions=`` / ``offset=`` pair every encoding accepts.

Implicit positions are ``offset, offset + 1, ..., offset + n - 1``; explicit positions are a
``(n,)`` or ``(b, n)`` tensor (packed sequences, left padding, arbitrary or fractional positions).
Both give identical results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posenc.core.validation import check_int, check_positions


def implicit_positions(n: int, offset: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n,)`` int64 positions ``offset .. offset + n - 1``."""
    check_int("offset", offset, minimum=0)
    return torch.arange(offset, offset + n, device=device)


def resolve_positions(
    positions: torch.Tensor | None,
    *,
    n: int,
    offset: int = 0,
    batch: int | None = None,
    device: torch.device | str | None = None,
    name: str = "positions",
) -> torch.Tensor:
    """Return ``(b | 1, n)`` positions, implicit when ``positions`` is None.

    positions: ``(n,)`` or ``(b, n)``; ``b`` must equal ``batch`` when given.
    """
    if positions is None:
        return implicit_positions(n, offset, device).unsqueeze(0)
    positions = check_positions(name, positions)
    if positions.ndim == 1:
        positions = positions.unsqueeze(0)
    if positions.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n,) or (b, n), got {tuple(positions.shape)}")
    if positions.shape[-1] != n:
        raise ValueError(f"`{name}` must have length {n} along its last axis, got shape {tuple(positions.shape)}")
    if batch is not None and positions.shape[0] not in (1, batch):
        raise ValueError(f"`{name}` batch size must be 1 or {batch} (the input's batch), got shape {tuple(positions.shape)}")
    if device is not None and positions.device != torch.device(device):
        raise ValueError(f"`{name}` is on {positions.device} but the input is on {device}")
    return positions


@dataclass(frozen=True)
class Positions:
    """The positions of ``n`` tokens, as handed to an encoding's hooks by a model.

    Implicit (``explicit is None``): ``offset .. offset + n - 1``, which lets encodings slice a cached
    table with Python integers (no host sync, no recompilation per value). Explicit: a ``(b | 1, n)``
    tensor of integer or float positions.
    """

    n: int
    offset: int = 0
    explicit: torch.Tensor | None = None

    @property
    def is_implicit(self) -> bool:
        return self.explicit is None

    @property
    def end(self) -> int:
        """One past the last implicit position (only meaningful when implicit)."""
        return self.offset + self.n

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(b | 1, n)`` positions as a tensor."""
        if self.explicit is not None:
            return self.explicit
        return implicit_positions(self.n, self.offset, device).unsqueeze(0)

    def cat(self, new: Positions) -> Positions:
        """These positions followed by ``new`` (keys of a cache followed by the new tokens' keys)."""
        if self.n == 0:
            return new
        if self.is_implicit and new.is_implicit and new.offset == self.end:
            return Positions(self.n + new.n, self.offset)
        device = (new.explicit if new.explicit is not None else self.explicit).device
        old, cur = self.tensor(device), new.tensor(device)
        batch = max(old.shape[0], cur.shape[0])
        return Positions(self.n + new.n, explicit=torch.cat([old.expand(batch, -1), cur.expand(batch, -1)], dim=-1))


def table_window(positions: Positions, length: int) -> tuple[int, int]:
    """``(start, rows)`` of a table indexed by absolute position that covers the implicit ``positions``:
    it starts at the first of them and keeps at least ``length`` rows (a power of two when it must grow
    past ``length`` to hold the ``n`` positions). Decoding token by token therefore rebuilds it once
    every ``rows`` tokens, and positions at any offset cost what the tokens cost, never a table from 0.
    """
    rows = max(length, 1 << max(positions.n - 1, 0).bit_length())
    return positions.offset, rows
