"""Transformer-XL's relative shift (Dai et al. 2019, arXiv:1901.02860, appendix B).

Scores against a table of relative distances are computed once per (query, distance) pair, as an
``(n, m)`` matrix whose column ``c`` holds distance ``m - 1 - c`` (largest first, the paper's ``R``
ordering). The shift re-indexes it by (query, key) with one pad and two reshapes, no gather: entry
``(i, j)`` of the result holds the score for distance ``i + (m - n) - j`` wherever
``j <= i + (m - n)`` (the keys a causal query may see when the ``n`` queries are the last ``n`` of the
``m`` keys). The other entries hold values of neighbouring rows; causal attention masks them.

Verified against the per-pair indexing ``x[i, n - 1 - i + j]`` in tests/relative/test_rel_shift.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posenc.core.validation import check_tensor


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """``(..., n, m)`` scores by distance -> ``(..., n, m)`` scores by key (see the module docstring).

    Requires ``m >= n``.
    """
    check_tensor("x", x)
    if x.ndim < 2:
        raise ValueError(f"`x` must have shape (..., n, m), got {tuple(x.shape)}")
    *_, n, m = x.shape
    if m < n:
        raise ValueError(f"`x` must have m >= n (at least as many distances as queries), got n={n}, m={m}")
    # (..., n, m) -> (..., n, m + 1): a zero column in front of every row
    return shift_padded(F.pad(x, (1, 0)))


def shift_padded(padded: torch.Tensor) -> torch.Tensor:
    """:func:`rel_shift` of scores that already carry the zero column in front, ``(..., n, m + 1)``
    -> ``(..., n, m)``: only views when ``padded`` is contiguous."""
    *lead, n, m1 = padded.shape
    # (..., n, m + 1) read as (..., m + 1, n); dropping its first row shifts row i left by n - 1 - i
    shifted = padded.reshape(*lead, m1, n)[..., 1:, :]
    return shifted.reshape(*lead, n, m1 - 1)


def skew(by_diagonal: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``(..., n, n + m - 1)`` contiguous -> ``(..., n, m)`` view with entry ``(i, j)`` at column
    ``j - i + n - 1`` of row i (rows read with a stride one shorter)."""
    if n == 1:
        return by_diagonal
    width = n + m - 1
    flat = by_diagonal.flatten(-2)[..., n - 1 : n - 1 + n * (width - 1)]
    return flat.unflatten(-1, (n, width - 1))[..., :m]
