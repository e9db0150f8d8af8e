"""Patch-token grids: which row and column each token of a vision Transformer sits at.

A ViT's sequence is ``num_prefix_tokens`` prefix tokens (class token, registers) followed by the
``h * w`` patch tokens in raster order (row by row). Token positions handed to the encodings are
flat token indices in that sequence: implicit ``offset .. offset + n - 1``, or explicit ``(b | 1, n)``
integer tensors (for instance the patches an MAE-style encoder keeps). Prefix tokens have no grid
position; every vision encoding documents what it gives them.
"""

from __future__ import annotations

from typing import Any

import torch

from posenc.core.positions import Positions
from posenc.core.validation import can_read_values, check_fits, check_int, check_positions, check_tensor


def check_grid(name: str, grid: Any) -> tuple[int, int]:
    """Return ``grid`` as a ``(h, w)`` pair of positive ints; an int ``g`` means ``(g, g)``."""
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise ValueError(f"`{name}` must be an int or an (h, w) pair of positive ints, got {grid!r}")
    h, w = (check_int(f"{name}[{i}]", g, minimum=1) for i, g in enumerate(grid))
    return h, w


def grid_coords(grid: int | tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(h * w, 2)`` int64 ``(row, col)`` of each patch in raster order (an int ``g`` means ``(g, g)``)."""
    h, w = check_grid("grid", grid)
    check_fits("grid", grid, (h * w, 2), torch.long, device)
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack((rows.flatten(), cols.flatten()), dim=-1)


def token_coords(
    positions: Positions,
    *,
    grid: tuple[int, int],
    num_prefix_tokens: int,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(row, col)`` of each token and whether it is a patch.

    Returns ``coords``: ``(b | 1, n, 2)`` int64 (0 for prefix tokens) and ``is_patch``: ``(b | 1, n)`` bool.
    Raises ``ValueError`` when a token index lies outside ``[0, num_prefix_tokens + h * w)``.
    """
    if not torch.compiler.is_compiling():
        if not isinstance(positions, Positions):
            raise TypeError(f"`positions` must be a Positions, got {type(positions).__name__}")
        grid = check_grid("grid", grid)
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    total = num_prefix_tokens + grid[0] * grid[1]
    if positions.is_implicit:
        if positions.end > total:
            raise ValueError(
                f"`positions` reach token {positions.end - 1} but the grid {grid} with {num_prefix_tokens} prefix "
                f"tokens has {total} tokens; the sequence must be prefix tokens then the h*w patches"
            )
        index = positions.tensor(device)
    else:
        index = positions.explicit
        if index.is_floating_point():
            raise ValueError(f"`positions` must be integer token indices for a patch grid, got {index.dtype}")
        if can_read_values(index) and index.numel() and (index.min() < 0 or index.max() >= total):
            raise ValueError(
                f"`positions` must lie in [0, {total - 1}] (prefix tokens then the {grid} patches), "
                f"got range [{int(index.min())}, {int(index.max())}]"
            )
        index = index.to(device)
    patch = index - num_prefix_tokens
    is_patch = patch >= 0
    # not patch.clamp(min=0): inductor (torch 2.13) fails to compile a clamp followed by // and %
    patch = torch.where(is_patch, patch, 0)
    coords = torch.stack((patch // grid[1], patch % grid[1]), dim=-1)
    return coords, is_patch


def grid_call_positions(
    n: int | None, positions: torch.Tensor | None, *, grid: tuple[int, int], num_prefix_tokens: int
) -> Positions:
    """The tokens a grid encoding's standalone ``module(n)`` / ``module(positions=...)`` call is about:
    explicit token indices ``(n,)`` or ``(b, n)``, else ``n`` tokens (default: the prefix tokens and
    the whole grid)."""
    if positions is not None:
        check_tensor("positions", check_positions("positions", positions), ndim=(1, 2))
        explicit = positions if positions.ndim == 2 else positions[None]
        return Positions(explicit.shape[-1], explicit=explicit)
    n = num_prefix_tokens + grid[0] * grid[1] if n is None else check_int("n", n, minimum=0)
    return Positions(n)
