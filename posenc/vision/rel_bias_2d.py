"""2-D relative position bias between image patches, Swin style (Liu et al. 2021, arXiv:2103.14030,
section 3.2; the 2-D form of Shaw et al. 2018, arXiv:1803.02155).

Each head learns a table ``B`` of ``(2h - 1)(2w - 1)`` entries, one per offset
``(dy, dx) in [-(h-1), h-1] x [-(w-1), w-1]``; the logit between query patch ``i`` and key patch
``j`` gets ``B[(dy + h - 1) * (2w - 1) + (dx + w - 1)]`` with ``(dy, dx) = (y_i - y_j, x_i - x_j)``,
so the bias depends only on the offset. The ``(n, n)`` index of the table is a derived buffer.

Prefix tokens (class token, registers) have no grid position: their bias to and from every
token is 0 (BEiT learns three extra entries instead; that variant is not provided). Swin keeps
one table per block (``per_layer``). A checkpoint saved at another grid loads by resampling each
head's table bicubically as a ``(2h - 1, 2w - 1)`` image (Swin's fine-tuning recipe).

Verified against a float64 double loop over patch pairs computing the offset and looking up the
table (``tests/vision/test_rel_bias_2d.py``); the index equals timm's Swin
``get_relative_position_index`` and the bias transformers' ``SwinRelativePositionBias``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.terms import ScoreMod, gathered_bias_mod
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_table_fits,
    check_tensor,
)
from posenc.vision.grid import check_grid, grid_call_positions, grid_coords, token_coords
from posenc.vision.learned import interpolate_grid


def relative_index_2d(coords_q: torch.Tensor, coords_k: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Table index of every (query, key) pair: coords ``(..., n, 2)`` and ``(..., m, 2)`` -> ``(..., n, m)``.

    The coordinates are integer ``(row, col)`` inside ``grid`` (checked in eager mode off the meta
    device): an offset past the grid would index past the table, or another offset's row of it.
    """
    h, w = check_grid("grid", grid)
    for name, coords in (("coords_q", coords_q), ("coords_k", coords_k)):
        check_tensor(name, coords)
        if coords.ndim < 2 or coords.shape[-1] != 2 or coords.is_floating_point() or coords.dtype == torch.bool:
            raise ValueError(
                f"`{name}` must be an integer tensor of shape (..., n, 2) holding (row, col), "
                f"got {coords.dtype} of shape {tuple(coords.shape)}"
            )
        if can_read_values(coords) and coords.numel():
            rows, cols = coords[..., 0], coords[..., 1]
            if bool((rows < 0).any() | (rows >= h).any() | (cols < 0).any() | (cols >= w).any()):
                raise ValueError(
                    f"`{name}` must lie in the grid {(h, w)} (rows 0 .. {h - 1}, columns 0 .. {w - 1}), got rows "
                    f"[{int(rows.min())}, {int(rows.max())}] and columns [{int(cols.min())}, {int(cols.max())}]"
                )
    return _relative_index_2d(coords_q, coords_k, (h, w))


def _relative_index_2d(coords_q: torch.Tensor, coords_k: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """:func:`relative_index_2d` without its checks, for coordinates valid by construction."""
    h, w = grid
    # (..., n, 1, 2) - (..., 1, m, 2) -> (..., n, m, 2) offsets (dy, dx)
    offset = coords_q.unsqueeze(-2) - coords_k.unsqueeze(-3)
    return (offset[..., 0] + h - 1) * (2 * w - 1) + (offset[..., 1] + w - 1)


def relative_position_index_2d(grid: int | tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """Swin's ``relative_position_index``: ``(h*w, h*w)`` int64 indices into a ``(2h-1)(2w-1)`` table."""
    grid = check_grid("grid", grid)
    check_fits("grid", grid, (grid[0] * grid[1],) * 2, torch.long, device)
    coords = grid_coords(grid, device=device)
    return _relative_index_2d(coords, coords, grid)


def resample_bias_table(table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """``((2h-1)(2w-1), heads)`` -> ``((2H-1)(2W-1), heads)`` by bicubic resampling of each head's table."""
    check_float_tensor("table", table, ndim=2)
    (h, w), (nh, nw) = check_grid("old_grid", old_grid), check_grid("new_grid", new_grid)
    if table.shape[0] != (2 * h - 1) * (2 * w - 1):
        raise ValueError(
            f"`table` must have (2h-1)(2w-1)={(2 * h - 1) * (2 * w - 1)} rows for grid {old_grid}, got {table.shape[0]}"
        )
    # refused by the caller's argument, before interpolate_grid names its own `size`
    check_fits("new_grid", new_grid, (table.shape[1], 2 * nh - 1, 2 * nw - 1), torch.float32, table.device)
    # (entries, heads) -> (1, heads, 2h-1, 2w-1)
    image = table.t().reshape(1, -1, 2 * h - 1, 2 * w - 1)
    return interpolate_grid(image, (2 * nh - 1, 2 * nw - 1)).flatten(2)[0].t().contiguous()


def check_bias_heads(q: torch.Tensor, heads: int) -> None:
    """A per-head bias of ``heads`` heads (or one shared by all) must match the ``(b, h, n, d)`` queries:
    a score_mod indexes it by the kernel's head, so more heads than ``q`` would be read in part."""
    if heads not in (1, q.shape[1]):
        raise ValueError(f"`q` has {q.shape[1]} heads but the bias was built for heads={heads} (or 1, shared)")


@register(
    "rel_bias_2d",
    paper="Liu et al. 2021, arXiv:2103.14030 (Swin); Shaw et al. 2018, arXiv:1803.02155",
    summary="Learned per-head bias for each 2-D patch offset (dy, dx), a (2h-1)(2w-1) table indexed per pair.",
)
class RelativeBias2d(DerivedTablesMixin, PositionEncoding):
    """Swin's relative position bias over a patch grid, as an attention ``"bias"`` hook.

    Args:
        heads: attention heads (one table column each).
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in).
        num_prefix_tokens: tokens before the patches; they get zero bias.
        init_std: standard deviation of the (truncated at 2 std) normal initialisation, 0.02 in Swin.
        resize_on_load: resample a checkpoint's table saved at another grid in ``load_state_dict``.
    """

    model_arguments = ("heads", "grid", "num_prefix_tokens")
    hooks = frozenset({"bias"})
    per_layer = True
    supports_causal = False

    def __init__(
        self,
        heads: int,
        grid: int | tuple[int, int] = 7,
        *,
        num_prefix_tokens: int = 0,
        init_std: float = 0.02,
        resize_on_load: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.grid = check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.init_std = check_float("init_std", init_std, minimum=0.0)
        self.resize_on_load = check_bool("resize_on_load", resize_on_load)
        h, w = self.grid
        check_table_fits({"grid": self.grid, "heads": heads}, ((2 * h - 1) * (2 * w - 1), heads), dtype, device)
        self.table = nn.Parameter(torch.empty((2 * h - 1) * (2 * w - 1), heads, device=device, dtype=dtype))
        self.register_buffer("index", torch.empty(0, 0, dtype=torch.long, device=device), persistent=False)
        self.reset_parameters()
        self.init_non_persistent_buffers(device)

    def reset_parameters(self) -> None:
        if self.init_std == 0:
            # trunc_normal_ divides by its std: a zero std is the zero table (BEiT starts its tables there)
            nn.init.zeros_(self.table)
        else:
            nn.init.trunc_normal_(self.table, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        self.index = relative_position_index_2d(self.grid, device=device)

    def bias(self, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        """``(b | 1, heads, n, m)`` bias between the tokens at ``q_positions`` and ``k_positions``."""
        p, full = self.num_prefix_tokens, self.num_prefix_tokens + self.grid[0] * self.grid[1]
        if q_positions.is_implicit and k_positions.is_implicit and q_positions.offset == k_positions.offset == 0 \
                and q_positions.n == k_positions.n == full:
            # (n_p, n_p, heads) -> (1, heads, n_p, n_p), then zero rows/columns for the prefix tokens
            patch = self.table[self.index].permute(2, 0, 1).unsqueeze(0)
            return nn.functional.pad(patch, (p, 0, p, 0))
        kw = {"grid": self.grid, "num_prefix_tokens": p, "device": self.table.device}
        cq, pq = token_coords(q_positions, **kw)
        ck, pk = token_coords(k_positions, **kw)
        index = _relative_index_2d(cq, ck, self.grid)  # (b | 1, n, m)
        keep = pq.unsqueeze(-1) & pk.unsqueeze(-2)
        # (b | 1, n, m, heads) -> (b | 1, heads, n, m)
        bias = self.table[index] * keep.unsqueeze(-1).to(self.table.dtype)
        return bias.permute(0, 3, 1, 2)

    def score_bias(self, q, k, *, q_positions: Positions, k_positions: Positions) -> torch.Tensor:
        return self.bias(q_positions, k_positions)

    def score_mod(self, q, k, *, q_positions: Positions, k_positions: Positions) -> ScoreMod:
        """The ``(b | 1, heads, n, m)`` bias (a grid's worth: small) read by ``[b, h, q_idx, kv_idx]``."""
        check_bias_heads(q, self.heads)
        return gathered_bias_mod(self.bias(q_positions, k_positions), q.shape[0])

    def forward(self, n: int | None = None, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(b | 1, heads, n, n)`` bias among ``n`` tokens (default: the whole grid with its prefix tokens)."""
        pos = grid_call_positions(n, positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens)
        return self.bias(pos, pos)

    def get_extra_state(self) -> dict[str, Any]:
        return {"grid": self.grid}

    def set_extra_state(self, state: Any) -> None:
        pass

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key, extra = prefix + "table", prefix + "_extra_state"
        saved = state_dict.get(extra) or {}
        if extra not in state_dict:
            state_dict = {**state_dict, extra: self.get_extra_state()}
        # a table saved at another grid of the same size ((2h-1)(2w-1): 2x6 and 6x2) has this table's shape
        other_grid = "grid" in saved and tuple(saved["grid"]) != self.grid
        if key in state_dict and (state_dict[key].shape != self.table.shape or other_grid):
            if state_dict[key].ndim != 2 or state_dict[key].shape[1] != self.heads:
                raise ValueError(
                    f"checkpoint's relative bias table has shape {tuple(state_dict[key].shape)} but this model has "
                    f"heads={self.heads} (one column each): only the grid can be resampled"
                )
            if not self.resize_on_load or "grid" not in saved:
                raise ValueError(
                    f"checkpoint's relative bias table has shape {tuple(state_dict[key].shape)} (grid {saved.get('grid')}) "
                    f"but this model's is {tuple(self.table.shape)} (grid {self.grid}); resampling needs "
                    "resize_on_load=True and the saved grid"
                )
            state_dict = {**state_dict, key: resample_bias_table(state_dict[key], saved["grid"], self.grid)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}"
