"""Learned absolute position embeddings: one trained vector per position.

Used by convolutional seq2seq (Gehring et al. 2017, arXiv:1705.03122), BERT and GPT-2; Vaswani et
al. 2017 (arXiv:1706.03762, Table 3 row E) found it about as good as the sinusoid. Its limit is the
table: positions at or past ``max_len`` have no row and raise. A checkpoint saved with one
``max_len`` loads into another by interpolating the table along positions (``resize_on_load=True``
or :meth:`LearnedPositionEncoding.resize`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_choice,
    check_fits,
    check_float,
    check_float_tensor,
    check_positive_int,
    check_table_fits,
)
from posenc.input.combine import combine_with_input


def resize_table(table: torch.Tensor, new_len: int, *, mode: Literal["linear", "nearest"] = "linear") -> torch.Tensor:
    """Resample a ``(max_len, d)`` table to ``(new_len, d)`` along positions (end points kept)."""
    check_float_tensor("table", table, ndim=2)
    if table.shape[0] == 0:
        raise ValueError(f"`table` must have at least one row to resample, got shape {tuple(table.shape)}")
    check_positive_int("new_len", new_len)
    check_choice("mode", mode, ("linear", "nearest"))
    work_dtype = arithmetic_dtype(table.dtype)  # float32 or better: a float64 table keeps its end points exactly
    check_fits("new_len", new_len, (new_len, table.shape[1]), work_dtype, table.device)
    if new_len == table.shape[0]:
        return table.clone()
    if not table.shape[1]:  # nothing to resample (interpolate refuses empty inputs)
        return table.new_empty(new_len, 0)
    if mode == "nearest":
        # the rows nearest to the positions the linear mode reads, i (L - 1) / (new_len - 1): interpolate's
        # nearest reads floor(i L / new_len), another scale, which drops the last row when shrinking
        scale = (table.shape[0] - 1) / max(new_len - 1, 1)
        rows = torch.floor(torch.arange(new_len, dtype=torch.float64, device=table.device) * scale + 0.5).long()
        return table.index_select(0, rows).contiguous()
    # (L, d) -> (1, d, L): interpolate works over the trailing axis
    src = table.t().unsqueeze(0).to(work_dtype)
    kwargs = {"align_corners": True} if mode == "linear" and table.shape[0] > 1 else {}
    out = F.interpolate(src, size=new_len, mode=mode if table.shape[0] > 1 else "nearest", **kwargs)
    return out.squeeze(0).t().to(table.dtype).contiguous()


@register(
    "learned",
    paper="Gehring et al. 2017, arXiv:1705.03122; Vaswani et al. 2017, arXiv:1706.03762",
    summary="A trained vector per position up to max_len, added to (or concatenated with) token embeddings.",
)
class LearnedPositionEncoding(PositionEncoding):
    """A learned ``(max_len, dim)`` table of absolute positions.

    Args:
        dim: width of each row (the model width when ``combine="add"``).
        max_len: number of rows; positions must lie in ``[0, max_len)``.
        combine: ``"add"`` or ``"concat"``.
        resize_on_load: interpolate a checkpoint's table of another length on ``load_state_dict``
            (otherwise a length mismatch raises ``ValueError``). Off by default, unlike
            ``vit_learned``'s: resampling a patch grid keeps each row at the same place in the
            image, the usual step of fine-tuning at another resolution, whereas stretching a 1-D
            table moves every position's vector to another index (row ``i`` then holds what was
            learned near ``i * old / new``), which a model only tolerates after fine-tuning, so
            it is asked for explicitly.
        init_std: standard deviation of the normal initialisation.
    """

    model_arguments = ("dim",)
    hooks = frozenset({"input"})

    def __init__(
        self,
        dim: int,
        max_len: int = 512,
        *,
        combine: Literal["add", "concat"] = "add",
        resize_on_load: bool = False,
        init_std: float = 0.02,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.max_len = check_positive_int("max_len", max_len)
        self.combine = check_choice("combine", combine, ("add", "concat"))
        self.concat_dim = dim if combine == "concat" else 0
        self.resize_on_load = check_bool("resize_on_load", resize_on_load)
        self.init_std = check_float("init_std", init_std, minimum=0.0)
        check_table_fits({"max_len": max_len, "dim": dim}, (max_len, dim), dtype, device)
        self.weight = nn.Parameter(torch.empty(max_len, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)

    def encode(self, positions: Positions) -> torch.Tensor:
        """``(b | 1, n, dim)`` rows for ``positions``; positions outside ``[0, max_len)`` raise."""
        if positions.is_implicit:
            if positions.end > self.max_len:
                raise ValueError(
                    f"`positions` reach {positions.end - 1} but the learned table has max_len={self.max_len} "
                    f"(valid positions 0..{self.max_len - 1}); resize it with .resize(new_len)"
                )
            return self.weight[positions.offset : positions.end].unsqueeze(0)
        pos = positions.explicit
        if pos.is_floating_point():
            raise ValueError(f"`positions` must be integers to index a learned table, got {pos.dtype}")
        if can_read_values(pos) and pos.numel() and (pos.min() < 0 or pos.max() >= self.max_len):
            raise ValueError(
                f"`positions` must lie in [0, {self.max_len - 1}] for a learned table with max_len={self.max_len}, "
                f"got range [{int(pos.min())}, {int(pos.max())}]"
            )
        return F.embedding(pos.long(), self.weight)  # embedding takes int64/int32 indices only

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """x: ``(b, n, d)`` -> ``(b, n, d)`` (add) or ``(b, n, d + dim)`` (concat)."""
        check_float_tensor("x", x, ndim=3)
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        return self.encode_input(x, positions=Positions(x.shape[-2], offset, None if positions is None else pos))

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        return combine_with_input(x, self.encode(positions), self.combine, name="x")

    @torch.no_grad()
    def resize(self, new_len: int, *, mode: Literal["linear", "nearest"] = "linear") -> LearnedPositionEncoding:
        """Resample the table to ``new_len`` rows in place; returns ``self``."""
        self.weight = nn.Parameter(resize_table(self.weight.detach(), new_len, mode=mode))
        self.max_len = new_len
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].shape[0] != self.max_len:
            loaded = state_dict[key]
            if loaded.ndim != 2 or loaded.shape[1] != self.weight.shape[1]:
                raise ValueError(
                    f"checkpoint's learned position table has shape {tuple(loaded.shape)} but this model's rows are "
                    f"dim={self.weight.shape[1]} wide: only the number of rows (positions) can be interpolated"
                )
            if not self.resize_on_load:
                raise ValueError(
                    f"checkpoint's learned position table has {loaded.shape[0]} rows but this model has "
                    f"max_len={self.max_len}; build it with resize_on_load=True to interpolate, or resize first"
                )
            state_dict = dict(state_dict)
            state_dict[key] = resize_table(loaded, self.max_len)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_len={self.max_len}, combine={self.combine!r}"
