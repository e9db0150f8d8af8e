"""Relative offsets between query and key positions, and the base every bias encoding shares."""

from __future__ import annotations

import torch

from posenc.core.base import PositionEncoding
from posenc.core.positions import NARROW_INTEGERS, Positions, resolve_positions
from posenc.core.terms import BlockTerm
from posenc.core.validation import check_fits, check_int, check_positions, check_same_device, check_tensor


def relative_positions(q_positions: Positions | torch.Tensor, k_positions: Positions | torch.Tensor) -> torch.Tensor:
    """``key position - query position``: ``(b | 1, n)`` and ``(b | 1, m)`` -> ``(b | 1, n, m)``.

    Either argument may be a :class:`Positions` or a tensor (``(n,)`` tensors on both sides give ``(n, m)``).
    """
    both = {"q_positions": q_positions, "k_positions": k_positions}
    for name, p in both.items():
        if not isinstance(p, (Positions, torch.Tensor)):
            raise TypeError(f"`{name}` must be a torch.Tensor or Positions, got {type(p).__name__}")
        t = p.explicit if isinstance(p, Positions) else p
        if t is not None:
            check_positions(name, t)
            check_tensor(name, t, ndim=(1, 2) if t is p else 2)
    explicit = [p if isinstance(p, torch.Tensor) else p.explicit for p in both.values()]
    device = next((t.device for t in explicit if t is not None), None)
    # (check_fits skips a traced call; formatting a traced length into its text would fix the graph to it)
    traced = torch.compiler.is_compiling()
    if all(isinstance(p, Positions) and p.is_implicit for p in both.values()):
        if not traced:
            check_fits("k_positions", f"{k_positions.n} keys", (q_positions.n, k_positions.n), torch.long, device)
        # a 1-D difference first: (m,) - (n, 1) broadcasts without building two (n, m) grids
        q = torch.arange(q_positions.offset, q_positions.end, device=device)
        k = torch.arange(k_positions.offset, k_positions.end, device=device)
        return (k.unsqueeze(0) - q.unsqueeze(1)).unsqueeze(0)
    q, k = (p.tensor(device) if isinstance(p, Positions) else p for p in both.values())
    # their difference is formed in their dtype: a narrow one would wrap around (uint8: 0 - 200 = 56)
    q, k = (t.long() if t.dtype in NARROW_INTEGERS else t for t in (q, k))
    check_same_device(q_positions=q, k_positions=k)
    if q.ndim == k.ndim == 2 and 1 not in (q.shape[0], k.shape[0]) and q.shape[0] != k.shape[0]:
        raise ValueError(
            f"`q_positions` and `k_positions` must have one batch size (or 1), got shapes {tuple(q.shape)} and {tuple(k.shape)}"
        )
    batch = max(q.shape[0], k.shape[0]) if max(q.ndim, k.ndim) == 2 else None
    shape = (q.shape[-1], k.shape[-1]) if batch is None else (batch, q.shape[-1], k.shape[-1])
    if not traced:
        check_fits("k_positions", f"{k.shape[-1]} keys", shape, torch.promote_types(q.dtype, k.dtype), q.device)
    return k.unsqueeze(-2) - q.unsqueeze(-1)


def position_tensors(
    q_positions: Positions, k_positions: Positions, batch: int, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, n)`` and ``(batch, m)`` position tensors (expanded views) for a score_mod to index by
    ``[b, q_idx]`` and ``[b, kv_idx]``."""
    qpos = q_positions.tensor(device).to(device)
    kpos = k_positions.tensor(device).to(device)
    return qpos.expand(batch, -1), kpos.expand(batch, -1)


def toeplitz(per_diagonal: torch.Tensor, m: int) -> torch.Tensor:
    """``(..., n + m - 1)`` values by diagonal -> ``(..., n, m)`` with entry ``(i, j)`` the value at
    index ``j - i + n - 1`` (offset ``j - i`` from ``-(n - 1)`` to ``m - 1``).

    Built from overlapping windows of the vector, so the gradient of the result is summed along its
    diagonals (``unfold``'s backward) instead of scattered pair by pair.
    """
    if not torch.compiler.is_compiling():
        if check_tensor("per_diagonal", per_diagonal).ndim == 0:
            raise ValueError("`per_diagonal` must have rank >= 1 (values by diagonal along the last axis), got a 0-d tensor")
        width = per_diagonal.shape[-1]
        # n = width - m + 1 queries: m = width + 1 leaves none
        check_int("m", m, minimum=0, maximum=width + 1)
        if m == width + 1:
            return per_diagonal.new_zeros(*per_diagonal.shape[:-1], 0, m)
    if torch.compiler.is_compiling():
        # unfold fixes its window length in a traced graph (one graph per sequence length); a gather by
        # offset keeps n and m symbolic
        n = per_diagonal.shape[-1] - m + 1
        device = per_diagonal.device
        offsets = torch.arange(m, device=device) - torch.arange(n, device=device).unsqueeze(1)  # j - i, (n, m)
        return per_diagonal[..., offsets + (n - 1)]
    # window w holds offsets w - (n - 1) .. w - (n - 1) + m - 1: the row of query n - 1 - w
    return per_diagonal.unfold(-1, m, 1).flip(-2)


def diagonal_block_term(per_diagonal: torch.Tensor, n: int, *, linear: bool = False) -> BlockTerm:
    """A bias that depends on ``j - i`` only, given by diagonal ``(h, n + m - 1)`` (index ``j - i + n - 1``,
    as :func:`toeplitz` reads it), as a :class:`BlockTerm`.

    ``linear``: the values are linear in the diagonal index (ALiBi's causal ``m_h (j - i)``), so every
    row of a block is its bottom row plus a constant, and ``add`` adds that one ``(h, 1, keys)`` row.

    ``fn`` gives each block as :func:`toeplitz` of the slice of diagonals it covers. ``add`` adds it to
    the block's logits in place, less one constant per row: the values of the run of equal diagonals
    at either end (T5's far buckets, a clipped offset table's last entries) are subtracted, so the
    columns where every row lies in that run take nothing, those where every row lies in the other
    end's run take one constant per head, and only the band between is spread. ``backward`` sums the
    block's logit gradients along its diagonals (exact for every diagonal, whatever ``add`` left out).
    """
    runs: dict[str, tuple[int, int]] = {}

    def fn(s, e, k0, k1, per_diagonal):
        first = n - e + k0  # the diagonal of the block's bottom-left entry
        return toeplitz(per_diagonal[..., first : first + (e - s) + (k1 - k0) - 1], k1 - k0).unsqueeze(0)

    def end_runs(per_diagonal: torch.Tensor) -> tuple[int, int]:
        """``(a, z)``: diagonals ``< a`` equal diagonal 0 and those ``> z`` the last one, in every head."""
        if "ends" not in runs and per_diagonal.device.type == "meta":
            runs["ends"] = (0, per_diagonal.shape[-1] - 1)  # no values: every block spread in full
        if "ends" not in runs:
            values = per_diagonal.detach().reshape(-1, per_diagonal.shape[-1])
            left = (values != values[:, :1]).any(0).nonzero()
            right = (values != values[:, -1:]).any(0).nonzero()
            width = values.shape[-1]
            runs["ends"] = (int(left[0]) if len(left) else width, int(right[-1]) if len(right) else -1)
        return runs["ends"]

    def add_linear(logits, s, e, k0, k1, per_diagonal):
        first = n - e + k0  # the diagonal of the bottom row's first key
        logits.add_(per_diagonal[..., first : first + (k1 - k0)].unsqueeze(-2).to(logits.dtype))

    def add(logits, s, e, k0, k1, per_diagonal):
        rows, keys = e - s, k1 - k0
        first = n - e + k0
        a, z = end_runs(per_diagonal)
        # column c holds diagonals first + c (bottom row) .. first + c + rows - 1 (top row)
        left = min(max(a - first - rows + 1, 0), keys)  # columns [0, left): every row in the left run
        right = min(max(z - first + 1, left), keys)  # columns [right, keys): every row in the right run
        low, high = per_diagonal[..., :1], per_diagonal[..., -1:]  # (h, 1): the two runs' values
        # subtract the value of the run whose columns are the wider; the other run's take the difference
        if keys - right > left:
            base, other, ends = high, low, slice(0, left)
        else:
            base, other, ends = low, high, slice(right, keys)
        if ends.stop > ends.start:  # (h, 1, 1): one constant per head
            logits[..., ends].add_((other - base).unsqueeze(-1).to(logits.dtype))
        if right > left:
            band = per_diagonal[..., first + left : first + right + rows - 1] - base
            logits[..., left:right].add_(toeplitz(band, right - left).to(logits.dtype))

    def backward(grad, s, e, k0, k1, tensors, grads):
        (per_diagonal,), (grad_diagonal,) = tensors, grads
        if grad_diagonal is None:
            return
        rows, keys = e - s, k1 - k0
        first, width = n - e + k0, rows + keys - 1
        lead = per_diagonal.shape[:-1]
        # each diagonal's sum: entry (r, c) laid out at column c - r + rows - 1 of a zeroed (rows, width)
        # grid (rows read with a stride one shorter), then summed over the rows
        g = grad.sum_to_size(1, *lead, rows, keys).reshape(-1, rows, keys)
        grid = g.new_zeros(g.shape[0], rows, width)
        grid.as_strided((g.shape[0], rows, keys), (rows * width, width - 1, 1), rows - 1).copy_(g)
        grad_diagonal[..., first : first + width] += grid.sum(-2).view(*lead, width).to(grad_diagonal.dtype)

    return BlockTerm(fn, (per_diagonal,), backward, add_linear if linear else add)


def table_length(needed: int, current: int, *, step: int = 256) -> int:
    """Size of a square ``(L, L)`` cache covering ``needed`` positions: grown in multiples of
    ``step`` so that decoding token by token rebuilds it once every ``step`` tokens, not every token."""
    return max(current, -(-needed // step) * step)


def square_cache_length(needed: int, current: int, n: int, m: int) -> int | None:
    """Size of a square ``(L, L)`` cache indexed by absolute position for ``n`` queries and ``m`` keys
    reaching ``needed``, or None when it is not worth building: a cache at most about four times the
    ``(n, m)`` bias it serves (decoding one query against long keys, or a few tokens at a far offset,
    compute the bias directly, which costs what the tokens cost)."""
    if needed <= current:
        return current
    length = table_length(needed, current)
    return length if length * length <= 4 * n * m + 256 * 256 else None


def implicit_window(q_positions: Positions, k_positions: Positions) -> tuple[slice, slice] | None:
    """Rows and columns of a square table indexed by absolute position that hold the offsets of these
    implicit positions, or None when either side is explicit."""
    if not (q_positions.is_implicit and k_positions.is_implicit):
        return None
    return slice(q_positions.offset, q_positions.end), slice(k_positions.offset, k_positions.end)


class BiasEncoding(PositionEncoding):
    """An encoding entering through the ``"bias"`` hook, callable on its own as ``bias(n, m)``."""

    hooks = frozenset({"bias"})

    def forward(
        self,
        n: int,
        m: int | None = None,
        *,
        q_positions: torch.Tensor | None = None,
        k_positions: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """The ``(b | 1, heads, n, m)`` bias for ``n`` queries (at ``offset + i``) and ``m`` keys
        (default ``n + offset``: a cache followed by the queries), or for explicit positions."""
        check_int("n", n, minimum=0)
        check_int("offset", offset, minimum=0)
        m = n + offset if m is None else check_int("m", m, minimum=0)
        q = Positions(n, offset, None if q_positions is None else resolve_positions(q_positions, n=n, name="q_positions"))
        k = Positions(m, 0, None if k_positions is None else resolve_positions(k_positions, n=m, name="k_positions"))
        return self.score_bias(None, None, q_positions=q, k_positions=k)
