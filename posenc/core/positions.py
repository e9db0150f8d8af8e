"""Resolving the keyword-only ``positions=`` / ``offset=`` pair every encoding accepts.

Implicit positions are ``offset, offset + 1, ..., offset + n - 1``; explicit positions are a
``(n,)`` or ``(b, n)`` tensor (packed sequences, left padding, arbitrary or fractional positions).
Both give identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from posenc.core.validation import check_int, check_positions, check_table_fits, check_tensor


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
    """Return ``(b | 1, n)`` positions, implicit (``offset .. offset + n - 1``) when ``positions`` is
    None; an ``offset`` beside explicit positions is refused rather than ignored.

    positions: ``(n,)`` or ``(b, n)``; ``b`` must equal ``batch`` when given.
    """
    if positions is None:
        return implicit_positions(n, offset, device).unsqueeze(0)
    if offset != 0:
        raise ValueError(
            f"`offset` ({offset}) applies to implicit positions only; with explicit `{name}`, add the offset "
            f"to them (`{name} + {offset}`) and leave `offset` at 0"
        )
    positions = check_positions(name, positions)
    if positions.ndim == 1:
        positions = positions.unsqueeze(0)
    if positions.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n,) or (b, n), got {tuple(positions.shape)}")
    if positions.shape[-1] != n:
        raise ValueError(f"`{name}` must have length {n} along its last axis, got shape {tuple(positions.shape)}")
    if batch is not None and (positions.shape[0] != 1 and positions.shape[0] != batch):
        raise ValueError(f"`{name}` batch size must be {'1' if batch == 1 else f'1 or {batch}'} (the input's batch), got shape {tuple(positions.shape)}")
    if device is not None and positions.device != torch.device(device):
        raise ValueError(f"`{name}` is on {positions.device} but the input is on {device}")
    return positions


#: Integer dtypes in which differences of positions can wrap around; explicit positions of these dtypes
#: are widened to int64 (:class:`Positions`, :func:`~posenc.bias.relative.relative_positions`).
NARROW_INTEGERS = (torch.uint8, torch.int8, torch.int16)


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

    def __post_init__(self) -> None:
        if self.explicit is not None and self.explicit.dtype in NARROW_INTEGERS:
            # widened: relative encodings take differences of positions, which wrap around in a narrow
            # dtype (uint8: 3 - 5 = 254, int8: 100 - (-100) = -56)
            object.__setattr__(self, "explicit", self.explicit.long())

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


def positions_from_documents(
    document_ids: torch.Tensor,
    *,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Positions that restart at 0 at the start of every document of a packed batch.

    document_ids: ``(n,)`` or ``(b, n)`` integer ids, each document a contiguous run of equal ids
    (a new run starts wherever the id changes) -> int64 positions of the same shape.
    randomize_positions: ``L`` gives each document instead its own ordered random subset of ``[0, L)``
    (:func:`randomized_positions`, drawn from ``generator``), as in training with randomized positions.
    """
    ids = _check_document_ids("document_ids", document_ids)
    n = ids.shape[-1]
    index = torch.arange(n, device=ids.device).expand_as(ids)
    start = _run_starts(ids)
    # the index of each token's run start: the running maximum of the starts seen so far
    first = torch.where(start, index, torch.zeros_like(index)).cummax(dim=-1).values
    local = index - first
    if randomize_positions is None and generator is None:
        return local
    check_randomize(randomize_positions, generator, n=int(local.max()) + 1 if local.numel() else 0)
    rows = local.shape[0] if local.ndim == 2 else 1
    out = torch.empty_like(local).reshape(rows, n)
    for row, begins in enumerate(start.reshape(rows, n).tolist()):
        cuts = [i for i, begin in enumerate(begins) if begin] + [n]
        for a, b in pairwise(cuts):
            out[row, a:b] = randomized_positions(b - a, randomize_positions, generator=generator, device=ids.device)[0]
    return out.reshape(local.shape)


def document_runs(document_ids: torch.Tensor) -> torch.Tensor:
    """``(n,)`` or ``(b, n)`` integer document ids -> int64 ids numbering their contiguous runs
    ``0, 1, ...`` in each row: an id that returns after another one starts a new document, as it
    restarts the positions of :func:`positions_from_documents`."""
    ids = _check_document_ids("document_ids", document_ids)
    return _run_starts(ids).long().cumsum(-1) - 1


def _run_starts(ids: torch.Tensor) -> torch.Tensor:
    """bool, True where a run of equal ids begins (the first token of each row, and every change)."""
    start = torch.ones_like(ids, dtype=torch.bool)
    start[..., 1:] = ids[..., 1:] != ids[..., :-1]
    return start


def document_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, n: int) -> torch.Tensor:
    """``(1, n)`` document ids from cumulative sequence lengths ``(docs + 1,)`` (``0, l0, l0 + l1, ..., n``),
    the varlen form of a packed batch of one row."""
    check_tensor("cu_seqlens", cu_seqlens)
    # [0] is an empty row's cu_seqlens (no documents); its values are checked below
    if cu_seqlens.ndim != 1 or cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool or cu_seqlens.numel() < 1:
        raise ValueError(f"`cu_seqlens` must be a 1-D integer tensor (0, l0, l0 + l1, ..., n), got {cu_seqlens.dtype} "
                         f"{tuple(cu_seqlens.shape)}")
    # the values are read where that is possible: not on the meta device, not while tracing (where
    # reading them would make the graph depend on the data)
    readable = cu_seqlens.device.type != "meta" and not torch.compiler.is_compiling()
    if readable and (
        int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != n or bool((cu_seqlens[1:] < cu_seqlens[:-1]).any())
    ):
        raise ValueError(f"`cu_seqlens` must rise from 0 to the sequence length {n}, got {cu_seqlens.tolist()}")
    index = torch.arange(n, device=cu_seqlens.device)
    return (torch.searchsorted(cu_seqlens[1:], index, right=True)).unsqueeze(0)


def _check_document_ids(name: str, ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"`{name}` must be a tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got {ids.dtype}")
    if ids.ndim not in (1, 2):
        raise ValueError(f"`{name}` must have shape (n,) or (b, n), got {tuple(ids.shape)}")
    return ids


#: Registered encodings whose output does not depend on the positions a model hands them, with the
#: reason; ``Transformer(randomize_positions=...)`` refuses them rather than silently doing nothing.
POSITION_FREE: dict[str, str] = {
    "conv_context": "it reads order from a convolution over neighbouring tokens, not from position indices",
    "wav2vec2_conv": "it reads order from a convolution over neighbouring frames, not from position indices",
    "fox": "its bias comes from forget gates computed from the keys (data-dependent), not from position indices",
    "cope": "its positions are contextual (sums of sigmoid gates over keys), not position indices",
}


def drawn_from(generator: torch.Generator | None) -> dict:
    """The ``generator=`` keyword of torch's random factories, left out when ``generator`` is None: under
    torch.compile with symbolic sizes (``dynamic=True``, or a recompile for a new length) they refuse an
    explicit ``generator=None`` ('SymIntArrayRef expected to contain only concrete integers')."""
    return {} if generator is None else {"generator": generator}


def randomized_positions(
    n: int,
    max_len: int,
    *,
    batch: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(batch, n)`` int64: for each row, ``n`` distinct positions drawn uniformly from
    ``range(max_len)`` and sorted ascending (Ruoss et al. 2023, arXiv:2305.16843).

    Training with these and evaluating with ``0 .. n - 1`` exposes the encoding to every position up
    to ``max_len`` while keeping the order of the tokens. ``n == 0`` gives a ``(batch, 0)`` tensor and
    ``batch == 0`` a ``(0, n)`` one (an empty batch).
    """
    check_int("n", n, minimum=0)
    check_int("max_len", max_len, minimum=1, maximum=2**63 - 1)  # positions are int64
    check_int("batch", batch, minimum=0)
    if n > max_len:
        raise ValueError(
            f"`max_len` ({max_len}) must be at least the sequence length `n` ({n}): "
            "randomized positions are n distinct values from range(max_len)"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    gen_device = generator.device if generator is not None else "cpu"
    # sizes checked before anything is drawn: the result, and the dense draw's (batch, max_len) argsort
    check_table_fits({"n": n, "batch": batch}, (batch, n), torch.int64, device if device is not None else gen_device)
    if max_len <= max(4 * n, 1 << 16):
        check_table_fits({"max_len": max_len, "batch": batch}, (batch, max_len), torch.int64, gen_device)
        keys = torch.rand(batch, max_len, device=gen_device, **drawn_from(generator))
        chosen = keys.argsort(dim=-1)[:, :n]
        return chosen.sort(dim=-1).values.to(device=device if device is not None else gen_device)
    # a range far larger than n: draw values until n distinct ones are found, without a max_len table
    # (the distinct values of uniform draws are a uniform subset given their count; a uniform n-subset
    # of it is then a uniform n-subset of the range)
    rows = []
    for _ in range(batch):
        found = torch.empty(0, dtype=torch.long, device=gen_device)
        while found.numel() < n:
            draws = torch.randint(0, max_len, (2 * n,), device=gen_device, **drawn_from(generator))
            found = torch.unique(torch.cat((found, draws)))
        keep = torch.randperm(found.numel(), device=gen_device, **drawn_from(generator))[:n]
        rows.append(found[keep].sort().values)
    out = torch.stack(rows) if rows else torch.empty(0, n, dtype=torch.long, device=gen_device)
    return out.to(device=device if device is not None else gen_device)


def positions_or_randomized(
    positions: torch.Tensor | None,
    randomize_positions: int | None,
    *,
    n: int,
    batch: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """The ``randomize_positions=L`` keyword of the functional helpers that take positions.

    ``L`` None: ``positions`` unchanged (``generator`` must then be None). ``L`` given: ``positions``
    must be None, and the result is :func:`randomized_positions` ``(batch, n)``, ``n`` ordered distinct
    positions from ``[0, L)`` per row, drawn from ``generator`` (the global stream when None) on ``device``.
    """
    if not check_randomize(randomize_positions, generator, n=n, positions=positions):
        return positions
    return randomized_positions(n, randomize_positions, batch=batch, generator=generator, device=device)


def check_randomize(
    randomize_positions: int | None,
    generator: torch.Generator | None,
    *,
    n: int,
    positions: torch.Tensor | None = None,
) -> bool:
    """Whether positions are to be drawn, after checking the ``randomize_positions=L`` keyword: ``L`` a
    positive int at least the sequence length ``n``, ``positions`` None with it, ``generator`` only with it."""
    if randomize_positions is None:
        if generator is not None:
            raise ValueError("`generator` draws randomized positions; pass `randomize_positions` with it, or leave it None")
        return False
    check_int("randomize_positions", randomize_positions, minimum=1, maximum=2**63 - 1)  # positions are int64
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    if positions is not None:
        raise ValueError(
            "`randomize_positions` draws the positions: pass it or `positions`, not both "
            f"(got positions of shape {tuple(getattr(positions, 'shape', ()))} and randomize_positions={randomize_positions})"
        )
    if n > randomize_positions:
        raise ValueError(
            f"`randomize_positions` ({randomize_positions}) must be at least the sequence length ({n}): "
            "randomized positions are distinct values from range(randomize_positions)"
        )
    return True
