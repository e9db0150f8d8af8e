"""Conditional position encoding: CPVT's position encoding generator, PEG (Chu et al. 2021,
arXiv:2102.10882).

The patch tokens ``(b, h*w, d)`` are viewed as a ``(b, d, h, w)`` feature map, a depthwise
``k x k`` convolution with zero padding is applied, and the result is added back to the tokens:
``x + DWConv(x)``. The encoding is conditioned on each token's neighbourhood, needs no table, and
works at any grid size; the zero padding lets it recover absolute position near the borders
(Islam et al. 2020, arXiv:2001.08248). Prefix tokens (class token) pass through unchanged.

CPVT inserts the PEG after the first encoder block (``after_block=0``), which the reference ViT
honours; a model that only knows the input hook applies it before the first block (CPVT's
"position 0" ablation). With explicit token positions (a subset of patches, MAE-style), the kept
tokens are scattered into a zero grid, convolved and gathered back.

Verified against a float64 loop over pixels and kernel taps with explicit zero padding
(``tests/vision/test_peg.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions, resolve_positions
from posenc.core.registry import register
from posenc.core.validation import (
    check_dtype_matches,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
)
from posenc.vision.grid import check_grid, token_coords


def peg(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    grid: tuple[int, int],
    *,
    num_prefix_tokens: int = 0,
) -> torch.Tensor:
    """``x + DWConv(x)`` over the patch grid: x ``(b, prefix + h*w, d)``; weight ``(d, 1, k, k)``; bias ``(d,)``."""
    check_float_tensor("x", x, ndim=3)
    h, w = check_grid("grid", grid)
    p = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    if x.shape[1] != p + h * w:
        raise ValueError(
            f"`x` must hold `num_prefix_tokens`={p} and the `grid` {h}x{w} patches ({p + h * w} tokens), got {x.shape[1]}"
        )
    d = x.shape[-1]
    check_float_tensor("weight", weight, ndim=4)
    if weight.shape[:2] != (d, 1) or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError(
            f"`weight` must have shape (d, 1, k, k) with d = {d} (the width of `x`) and k odd, got {tuple(weight.shape)}"
        )
    if bias is not None:
        check_shape("bias", check_float_tensor("bias", bias), (d,), why="(one per channel)")
    check_same_device(x=x, weight=weight, bias=bias)
    if x.shape[0] == 0:
        return x.clone()
    # (b, h*w, d) -> (b, d, h, w)
    fmap = x[:, p:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    bias = None if bias is None else bias.to(x.dtype)
    out = F.conv2d(fmap, weight.to(x.dtype), bias, padding=weight.shape[-1] // 2, groups=fmap.shape[1])
    return torch.cat([x[:, :p], x[:, p:] + out.flatten(2).transpose(1, 2)], dim=1)


@register(
    "peg",
    paper="Chu et al. 2021, arXiv:2102.10882",
    summary="CPVT's position encoding generator: depthwise convolution over the patch grid added to the tokens.",
)
class PEG(PositionEncoding):
    """Depthwise convolution over the token grid, added to the tokens.

    Args:
        dim: token width (the convolution is depthwise, one filter per channel).
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in; any grid works at run time).
        num_prefix_tokens: tokens before the patches; they pass through.
        kernel_size: odd kernel (3 in CPVT).
        after_block: the block after which a vision Transformer applies it (0: after the first).
    """

    model_arguments = ("dim", "grid", "num_prefix_tokens", "kernel_size")
    hooks = frozenset({"input"})
    packing_unsupported = "its convolution reads neighbouring patches, which in a packed row belong to other images"
    supports_causal = False

    def __init__(
        self,
        dim: int,
        grid: int | tuple[int, int] = 14,
        *,
        num_prefix_tokens: int = 0,
        kernel_size: int = 3,
        after_block: int | None = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.grid = check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd so the grid keeps its size, got {kernel_size}")
        self.after_block = None if after_block is None else check_int("after_block", after_block, minimum=0)
        check_layers_fit({"dim": dim, "kernel_size": kernel_size}, dim * (kernel_size * kernel_size + 1), dtype, device)
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        """x: ``(b, n, dim)`` tokens at ``positions`` -> ``(b, n, dim)``."""
        check_float_tensor("x", x, ndim=3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim}, got {x.shape[-1]}")
        p, (h, w) = self.num_prefix_tokens, self.grid
        if positions.is_implicit and positions.offset == 0 and positions.n == p + h * w:
            return peg(x, self.proj.weight, self.proj.bias, self.grid, num_prefix_tokens=p)
        coords, is_patch = token_coords(positions, grid=self.grid, num_prefix_tokens=p, device=x.device)
        b = x.shape[0]
        flat = (coords[..., 0] * w + coords[..., 1]).expand(b, -1)  # (b, n)
        keep = is_patch.expand(b, -1).unsqueeze(-1).to(x.dtype)
        # add the kept patch tokens into a zero (b, h*w, d) grid (prefix tokens add zeros)
        grid = x.new_zeros(b, h * w, self.dim).scatter_add(1, flat.unsqueeze(-1).expand(-1, -1, self.dim), x * keep)
        full = peg(grid, self.proj.weight, self.proj.bias, self.grid) - grid
        delta = full.gather(1, flat.unsqueeze(-1).expand(-1, -1, self.dim))
        return x + delta * keep

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, n, dim)`` tokens; ``positions``: ``(n,)`` or ``(b, n)`` token indices (default: the full grid)."""
        check_dtype_matches("x", check_tensor("x", x, ndim=3), self)
        n = x.shape[1]
        explicit = None if positions is None else resolve_positions(positions, n=n, batch=x.shape[0], device=x.device)
        return self.encode_input(x, positions=Positions(n, explicit=explicit))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}, after_block={self.after_block}"
