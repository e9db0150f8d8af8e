"""cos/sin of RoPE angles for explicit positions, gathered from a cached table instead of recomputed.

``apply_rope(x, positions)`` is called with a fresh positions tensor every step; forming its float64
angles, reducing them modulo 2π and taking their cosines each time costs more than the rotation.
Integer positions in ``[0, MAX_CACHED_POSITIONS)`` are therefore looked up in a table of every
position up to the next power of two past the largest seen, kept per (width, base, dtype, device):
the rows are bit-identical to computing them directly (same float64 angles, same reduction); a
contiguous range of positions is returned as a view of the table, without a gather. Float
positions, larger positions, the meta device and traced code compute directly.

Reading the range of the positions (their smallest and largest value, whether they are consecutive)
takes a pass over them. On the CPU it is read on every call, by the RoPE library's one-pass C
function for contiguous int64 positions once it is loaded, else through NumPy (about 10 µs for 2,048
positions), so positions written in any way, through a NumPy array sharing their memory included,
are always seen. Elsewhere it is also a host sync, so it is remembered for the last positions tensor
seen (the same tensor object or a view of it, unchanged since: same version counter, which every
in-place torch operation on it or its views bumps, same storage and layout), and rotating queries and
keys in two calls, or every layer of a model, with one positions tensor syncs once; values written
there behind torch's back (through ``.data``) are not seen: write positions with torch operations,
or pass a new tensor. Positions wrapped by a ``torch.func`` transform are computed directly.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict

import torch

from posenc.core.frequencies import cos_sin, inverse_frequencies
from posenc.core.tables import building_tables
from posenc.rotary import cpu_kernel

#: Positions past this are computed directly (the table for d = 128 would pass 64 MiB).
MAX_CACHED_POSITIONS = 1 << 16
#: Tables kept at once (least recently used dropped first).
MAX_TABLES = 8

_CPU = torch.device("cpu")
#: Position dtypes that index a table as they are (uint8 would index as a boolean mask, int8 and int16 not at all)
INDEX_DTYPES = (torch.int64, torch.int32)

_tables: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
#: (weak reference to the tensor the last positions view, their state, their (low, high, consecutive))
_last_bounds: tuple[weakref.ref, tuple, tuple[int, int, bool]] | None = None


def _table(key: tuple, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    dim, base, dtype, device = key
    cached = _tables.get(key)
    if cached is None or cached[0].shape[0] < rows:
        length = max(256, 1 << (rows - 1).bit_length())
        with building_tables():
            inv_freq = inverse_frequencies(dim, base, device=device)
            cached = cos_sin(torch.arange(length, device=device), inv_freq, dtype=dtype)
        _tables[key] = cached
        _range_views.cache_clear()  # its views of the replaced table would be stale and keep it alive
    _tables.move_to_end(key)
    while len(_tables) > MAX_TABLES:
        _tables.popitem(last=False)
        _range_views.cache_clear()
    return cached


def _is_range(positions: torch.Tensor, low: int, high: int) -> bool:
    """Whether ``positions`` of shape ``(n,)`` or ``(1, n)`` are exactly ``low, low + 1, ..., high``
    (the usual explicit positions)."""
    if positions.shape[:-1].numel() != 1 or high - low + 1 != positions.shape[-1]:
        return False
    return positions.numel() == 1 or bool((positions.diff() == 1).all())


def _state(positions: torch.Tensor) -> tuple | None:
    """What identifies the values of ``positions`` while the tensor object lives: its version counter
    (bumped by every in-place write, through any view), storage and layout; None for inference
    tensors, which have no version counter."""
    if positions.is_inference():
        return None
    return positions._version, positions.data_ptr(), positions.shape, positions.stride(), positions.dtype


def _cpu_bounds(positions: torch.Tensor) -> tuple[int, int, bool]:
    """``(low, high, consecutive)`` of non-empty integer CPU ``positions``, read by the RoPE library
    where it can (:func:`~posenc.rotary.cpu_kernel.int64_bounds`), else through NumPy (either a
    fraction of the cost of the torch operations' dispatch)."""
    read = cpu_kernel.int64_bounds(positions)  # one pass in C where the RoPE library is loaded
    if read is not None:
        return read
    values = positions.numpy().reshape(-1)
    first, last = int(values[0]), int(values[-1])
    # one row whose ends are n - 1 apart: consecutive exactly when every step is +1 (then the ends are
    # the bounds, and no minimum or maximum needs reading)
    one_row = positions.shape[-1] == values.size and last - first + 1 == values.size
    if one_row and (values.size == 1 or bool((values[1:] - values[:-1] == 1).all())):
        return first, last, True
    return int(values.min()), int(values.max()), False


def _bounds(positions: torch.Tensor) -> tuple[int, int, bool]:
    """``(low, high, consecutive)`` of non-empty integer ``positions``; off the CPU remembered for the
    last tensor."""
    global _last_bounds
    if positions.device.type == "cpu":
        return _cpu_bounds(positions)
    state = _state(positions)
    # callers' (n,) positions reach here as fresh (1, n) views: the tensor they view is what persists
    root = positions if positions._base is None else positions._base
    if state is not None and _last_bounds is not None:
        ref, last_state, bounds = _last_bounds
        if ref() is root and last_state == state:
            return bounds
    low, high = (int(v) for v in torch.aminmax(positions))
    bounds = (low, high, _is_range(positions, low, high))
    _last_bounds = None if state is None else (weakref.ref(root), state, bounds)
    return bounds


def _with_heads(t: torch.Tensor) -> torch.Tensor:
    # (n, f) -> (1, 1, n, f); (b, n, f) -> (b, 1, n, f): broadcast over heads
    return t.unsqueeze(-3) if t.ndim == 3 else t.unsqueeze(0).unsqueeze(0)


@functools.lru_cache(maxsize=64)
def _range_views(key: tuple, low: int, high: int, shape: torch.Size, per_head: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``low..high`` of the cached table ``key`` shaped like positions of ``shape`` (with a heads
    axis where ``per_head``): views, cached until that table is replaced (making them costs more than
    the rotation of a short input)."""
    cos, sin = _tables[key]
    full = (*shape, cos.shape[-1])
    with building_tables():  # views made under inference mode could not be saved for a later backward
        views = cos[low : high + 1].expand(full), sin[low : high + 1].expand(full)
        return (_with_heads(views[0]), _with_heads(views[1])) if per_head else views


def rope_cos_sin(
    positions: torch.Tensor, dim: int, base: float, *, dtype: torch.dtype = torch.float32, per_head: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``positions * base^(-2i/dim)``, each ``(*positions.shape, dim/2)`` in ``dtype``.

    ``per_head``: for positions ``(n,)`` or ``(b, n)``, shaped ``(1, 1, n, dim/2)`` or
    ``(b, 1, n, dim/2)`` instead, to broadcast over the heads of ``(b, h, n, d)`` queries or keys."""
    # one device object for the CPU: building positions.device per call costs ~10 µs with cold caches
    device = _CPU if positions.is_cpu else positions.device
    if (
        not positions.is_floating_point()
        and device.type != "meta"
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(positions)
        and positions.numel()
    ):
        low, high, consecutive = _bounds(positions)
        if low >= 0 and high < MAX_CACHED_POSITIONS:
            key = (dim, float(base), dtype, device)
            table = _table(key, high + 1)
            if consecutive:
                # views of the table, shaped like positions + (dim/2,): nothing gathered
                return _range_views(key, low, high, positions.shape, per_head)
            index = positions if positions.dtype in INDEX_DTYPES else positions.long()
            cos, sin = table[0][index], table[1][index]
            return (_with_heads(cos), _with_heads(sin)) if per_head else (cos, sin)
    cos, sin = cos_sin(positions, inverse_frequencies(dim, base, device=device), dtype=dtype)
    return (_with_heads(cos), _with_heads(sin)) if per_head else (cos, sin)


def clear() -> None:
    """Drop every cached table and the remembered range of the last positions."""
    global _last_bounds
    _tables.clear()
    _range_views.cache_clear()
    _last_bounds = None
