"""Learned absolute patch position embeddings of the Vision Transformer (Dosovitskiy et al. 2020,
arXiv:2010.11929), with resampling to another patch grid.

A ViT adds a learned ``(1, prefix + h * w, d)`` table to its token sequence: one row per prefix
token (class token, registers) then one per patch in raster order. Fine-tuning at another image
resolution changes the grid, so the patch rows are viewed as a ``(d, h, w)`` image and resampled
bicubically to the new grid, the prefix rows kept apart and unchanged (section 3.2 of the paper;
DeiT's ``interpolate_pos_embed`` does the same). The interpolation is
``F.interpolate(mode="bicubic", align_corners=False)``, Keys' cubic kernel with ``a = -0.75`` and
clamped borders, without antialiasing. timm's ``resample_abs_pos_embed`` equals it with
``antialias=False``; timm's default, ``antialias=True``, is PyTorch's antialiased bicubic (Pillow's
``a = -0.5`` kernel, widened when shrinking), which differs from it by up to about 0.3 on a
unit-variance table when enlarging 4x4 to 6x6 and by more than 1 when shrinking.

A checkpoint saved with one grid loads into a model built for another: the table is resampled in
``load_state_dict`` (``resize_on_load=True``, the default). The grid is stored in the module's
extra state; tables without it (other code's checkpoints) are taken as square.

Verified against a float64 separable cubic-convolution written from Keys (1981)
(``tests/vision/test_learned.py``), and, on a machine with timm, against its
``resample_abs_pos_embed(..., antialias=False)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_table_fits,
)
from posenc.vision.grid import check_grid, token_coords


def interpolate_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of ``(1, d, h, w)`` to ``(1, d, *size)`` in float32 or better, in ``grid``'s dtype."""
    check_float_tensor("grid", grid, ndim=4)
    size = check_grid("size", size)
    if not grid.shape[-2] or not grid.shape[-1]:
        raise ValueError(f"`grid` must have at least one row and column to resample, got shape {tuple(grid.shape)}")
    work_dtype = arithmetic_dtype(grid.dtype)
    check_fits("size", size, (*grid.shape[:2], *size), work_dtype, grid.device)
    if tuple(grid.shape[-2:]) == size:
        return grid.clone()
    if not grid.shape[1]:  # no channels: nothing to resample (interpolate refuses empty inputs)
        return grid.new_empty(*grid.shape[:2], *size)
    work = grid.to(arithmetic_dtype(grid.dtype))
    return F.interpolate(work, size=size, mode="bicubic", align_corners=False).to(grid.dtype)


def resample_pos_embed(
    table: torch.Tensor,
    new_shape: tuple[int, int],
    *,
    num_prefix_tokens: int = 0,
    old_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample a ViT position table ``(1, prefix + h * w, d)`` to ``(1, prefix + new_h * new_w, d)``.

    The first ``num_prefix_tokens`` rows are copied unchanged; the patch rows are resampled
    bicubically as a ``(d, h, w)`` image. ``old_shape`` is the table's ``(h, w)``, square by default.
    """
    check_float_tensor("table", table, ndim=3)
    if table.shape[0] != 1:
        raise ValueError(f"`table` must have shape (1, prefix + h*w, d), got {tuple(table.shape)}")
    new_h, new_w = check_grid("new_shape", new_shape)
    prefix = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    patches = table.shape[1] - prefix
    if patches < 1:
        raise ValueError(f"`num_prefix_tokens`={prefix} leaves no patch rows in a table of shape {tuple(table.shape)}")
    check_fits("new_shape", new_shape, (1, prefix + new_h * new_w, table.shape[-1]), torch.float32, table.device)
    if old_shape is None:
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(f"`old_shape` must be given: the table's {patches} patch rows are not a square grid")
        old_shape = (side, side)
    old_h, old_w = check_grid("old_shape", old_shape)
    if old_h * old_w != patches:
        raise ValueError(f"`old_shape` {old_shape} has {old_h * old_w} patches but the table has {patches} patch rows")
    # (1, h*w, d) -> (1, d, h, w): interpolate over the grid
    grid = table[:, prefix:].reshape(1, old_h, old_w, -1).permute(0, 3, 1, 2)
    grid = interpolate_grid(grid, (new_h, new_w))
    # (1, d, H, W) -> (1, H*W, d)
    return torch.cat([table[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)


@register(
    "vit_learned",
    paper="Dosovitskiy et al. 2020, arXiv:2010.11929",
    summary="Learned table of patch (and class-token) positions, resampled bicubically to other grids.",
)
class LearnedPatchPosition(PositionEncoding):
    """A learned ``(1, num_prefix_tokens + h * w, dim)`` table added to the token sequence.

    Args:
        dim: model width.
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in).
        num_prefix_tokens: class/register tokens before the patches; each gets its own row.
        resize_on_load: resample a checkpoint's table saved at another grid in ``load_state_dict``
            (on by default: the resampled rows keep their places in the image; the 1-D ``learned``
            table leaves it off, since stretching it moves positions, see its docstring).
        init_std: standard deviation of the normal initialisation (0.02 as in timm).
    """

    model_arguments = ("dim", "grid", "num_prefix_tokens")
    hooks = frozenset({"input"})
    supports_causal = False

    def __init__(
        self,
        dim: int,
        grid: int | tuple[int, int] = 14,
        *,
        num_prefix_tokens: int = 0,
        resize_on_load: bool = True,
        init_std: float = 0.02,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.grid = check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.resize_on_load = check_bool("resize_on_load", resize_on_load)
        self.init_std = check_float("init_std", init_std, minimum=0.0)
        n = self.num_prefix_tokens + self.grid[0] * self.grid[1]
        sizes = {"num_prefix_tokens": self.num_prefix_tokens, "grid": self.grid, "dim": dim}
        check_table_fits(sizes, (n, dim), dtype, device)
        self.weight = nn.Parameter(torch.empty(1, n, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)

    def encode(self, positions: Positions) -> torch.Tensor:
        """``(b | 1, n, dim)`` rows of the tokens at ``positions`` (flat token indices)."""
        token_coords(positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens)  # range check
        if positions.is_implicit:
            return self.weight[:, positions.offset : positions.end]
        return F.embedding(positions.explicit.to(self.weight.device), self.weight[0])

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        check_float_tensor("x", x, ndim=3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim}, got {x.shape[-1]}")
        return x + self.encode(positions).to(x.dtype)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, n, dim)`` tokens -> ``x`` plus their rows; ``positions``: ``(n,)`` or ``(b, n)`` token indices."""
        check_float_tensor("x", x, ndim=3)
        n = x.shape[1]
        explicit = None if positions is None else resolve_positions(positions, n=n, batch=x.shape[0], device=x.device)
        pos = Positions(n, explicit=explicit)
        return self.encode_input(x, positions=pos)

    @torch.no_grad()
    def resize(self, grid: int | tuple[int, int]) -> LearnedPatchPosition:
        """Resample the table to ``grid`` in place; returns ``self``."""
        grid = check_grid("grid", grid)
        # refused by this method's argument, not by resample_pos_embed's `new_shape`
        rows = self.num_prefix_tokens + grid[0] * grid[1]
        check_fits("grid", grid, (1, rows, self.dim), arithmetic_dtype(self.weight.dtype), self.weight.device)
        table = resample_pos_embed(self.weight.detach(), grid, num_prefix_tokens=self.num_prefix_tokens, old_shape=self.grid)
        self.weight = nn.Parameter(table)
        self.grid = grid
        return self

    def get_extra_state(self) -> dict[str, Any]:
        return {"grid": self.grid, "num_prefix_tokens": self.num_prefix_tokens}

    def set_extra_state(self, state: Any) -> None:
        # the saved grid is consumed in _load_from_state_dict; this module keeps its own
        pass

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key, extra = prefix + "weight", prefix + "_extra_state"
        saved = state_dict.get(extra) or {}
        if extra not in state_dict:  # a table saved without its grid (other code's checkpoints)
            state_dict = {**state_dict, extra: self.get_extra_state()}
        # a table saved at another grid of as many patches (2x6 into 6x2) has this table's shape
        other_grid = "grid" in saved and tuple(saved["grid"]) != self.grid
        if key in state_dict and (state_dict[key].shape != self.weight.shape or other_grid):
            loaded = state_dict[key]
            if saved.get("num_prefix_tokens", self.num_prefix_tokens) != self.num_prefix_tokens:
                raise ValueError(
                    f"checkpoint's position table has {saved['num_prefix_tokens']} prefix rows but this model has "
                    f"num_prefix_tokens={self.num_prefix_tokens}"
                )
            if loaded.ndim != 3 or loaded.shape[0] != 1 or loaded.shape[2] != self.weight.shape[2]:
                raise ValueError(
                    f"checkpoint's position table has shape {tuple(loaded.shape)} but this model's is "
                    f"{tuple(self.weight.shape)} (dim={self.weight.shape[2]}): only the grid can be resampled"
                )
            if not self.resize_on_load:
                raise ValueError(
                    f"checkpoint's position table has shape {tuple(loaded.shape)} (grid {saved.get('grid')}) but this "
                    f"model's is {tuple(self.weight.shape)} (grid {self.grid}); build it with resize_on_load=True to resample"
                )
            patches = loaded.shape[1] - self.num_prefix_tokens
            if "grid" not in saved and (patches < 1 or math.isqrt(patches) ** 2 != patches):
                # a table saved without its grid is taken as square: resample_pos_embed would ask for old_shape
                raise ValueError(
                    f"checkpoint's position table has {loaded.shape[1]} rows and no saved grid: with this model's "
                    f"num_prefix_tokens={self.num_prefix_tokens} that leaves {patches} patch rows, not a square grid "
                    "(a checkpoint with another number of prefix rows, e.g. none for the class token or a "
                    "distillation token beside it?)"
                )
            state_dict = dict(state_dict)
            state_dict[key] = resample_pos_embed(
                loaded, self.grid, num_prefix_tokens=self.num_prefix_tokens, old_shape=saved.get("grid")
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}"
