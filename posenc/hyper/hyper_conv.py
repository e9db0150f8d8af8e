"""Position-conditioned hypernetworks (Ha et al. 2016, arXiv:1609.09106, section 3.1).

A hypernetwork generates the weights of another network from an embedding. Ha et al.'s static
hypernetwork for convolutions generates a kernel ``K_j`` (``out x in x k x k``) from a layer
embedding ``z_j`` in two linear steps, one slice per input channel ``i``::

    a_i = W_i z_j + b_i                  (d,)          one per input channel
    K_j^i = W_out a_i + b_out            (out, k, k)   the kernel slice for input channel i
    K_j = [K_j^1, ..., K_j^in]

(:class:`HyperKernel`). :class:`HyperConv2d` feeds it a *position* encoding instead of a layer
embedding: the embedding of each output pixel's coordinates (NeRF bands of the normalised
coordinates, or the sinusoidal encoding of the integer row and column), so the kernel applied at a
pixel depends on where the pixel is. ``mode="kernel"`` generates a whole kernel per position;
``mode="modulation"`` keeps one learned kernel and generates a per-position scale for each of its
``(out, in)`` slices (cheaper; the kernels' shapes are shared, their strength varies).

Verified against float64 loops: Ha et al.'s two-step formula (``HyperKernel``) and the per-position
convolution written pixel by pixel (``conv2d_per_position``), in ``tests/hyper/test_hyper_conv.py``;
on a task whose right filter changes across the image it beats a shared convolution of the same
kernel size.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from posenc.coordinate.nerf import MAX_FREQUENCIES, nerf_encoding
from posenc.core.base import EncodingModule
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_choice,
    check_dtype_matches,
    check_even,
    check_fits,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
)
from posenc.input.sinusoidal import sinusoidal


def conv2d_per_position(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """A stride-1, zero-padded ("same") convolution whose kernel differs at every output pixel.

    x: ``(b, c, H, W)``; kernels: ``(H, W, o, c, k, k)`` with ``k`` odd. Returns ``(b, o, H, W)``.
    Memory grows as ``H W o c k^2`` for the kernels plus ``b c k^2 H W`` for the unfolded patches.
    """
    x = check_float_tensor("x", x, ndim=4)
    kernels = check_float_tensor("kernels", kernels, ndim=6)
    b, c, height, width = x.shape
    kh, kw = kernels.shape[-2:]
    if kernels.shape[:2] != (height, width) or kernels.shape[3] != c or kh != kw or kh % 2 == 0:
        raise ValueError(
            f"`kernels` must have shape (H, W, o, c, k, k) = ({height}, {width}, o, {c}, k, k) with k odd "
            f"to match `x` {tuple(x.shape)}, got {tuple(kernels.shape)}"
        )
    check_same_device(x=x, kernels=kernels)
    if x.numel() == 0:
        return x.new_zeros(b, kernels.shape[2], height, width)
    check_fits("x", tuple(x.shape), (b, c * kh * kw, height * width), x.dtype, x.device)  # the patches
    # (b, c k k, H W): the k x k neighbourhood of every pixel
    patches = F.unfold(x, kh, padding=kh // 2)
    # (H, W, o, c, k, k) -> (H W, o, c k k), matching unfold's (c, k, k) order
    weights = rearrange(kernels, "h w o c i j -> (h w) o (c i j)").to(x.dtype)
    out = torch.einsum("bjp,poj->bop", patches, weights)
    return out.reshape(b, -1, height, width)


class HyperKernel(nn.Module):
    """Ha et al.'s static hypernetwork: embeddings ``(*, e)`` to kernels ``(*, out, in, k, k)``.

    Args:
        embed_dim: width ``e`` of the embedding ``z``.
        in_channels, out_channels, kernel_size: shape of the generated kernels.
        hidden: width ``d`` of the per-input-channel vectors ``a_i``.
    """

    def __init__(
        self,
        embed_dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        hidden: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.hidden = check_positive_int("hidden", hidden)
        weights = (embed_dim + 1) * in_channels * hidden + (hidden + 1) * out_channels * kernel_size * kernel_size
        sizes = {"embed_dim": embed_dim, "in_channels": in_channels, "out_channels": out_channels, "hidden": hidden}
        check_layers_fit({**sizes, "kernel_size": kernel_size}, weights, dtype, device)
        kw = {"device": device, "dtype": dtype}
        self.w_in = nn.Linear(embed_dim, in_channels * hidden, **kw)  # all W_i, b_i stacked
        self.w_out = nn.Linear(hidden, out_channels * kernel_size * kernel_size, **kw)  # W_out, b_out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: ``(*, e)`` -> ``(*, out, in, k, k)``."""
        z = check_dtype_matches("z", check_float_tensor("z", z), self, owner="the hypernetwork")
        if z.ndim == 0 or z.shape[-1] != self.embed_dim:
            raise ValueError(f"`z` must have last dimension embed_dim={self.embed_dim}, got {tuple(z.shape)}")
        # (*, in d) -> (*, in, d): one vector a_i per input channel
        a = self.w_in(z).unflatten(-1, (self.in_channels, self.hidden))
        k = self.kernel_size
        # (*, in, out k k) -> (*, out, in, k, k)
        return rearrange(self.w_out(a), "... c (o i j) -> ... o c i j", o=self.out_channels, i=k, j=k)


def _check_position_args(position: str, num_frequencies: int, pos_dim: int) -> None:
    check_choice("position", position, ("nerf", "sinusoidal"))
    # NeRF's bands stop at 2^63 (nerf_encoding refuses more), checked here so a module cannot be built with more
    check_int("num_frequencies", num_frequencies, minimum=0, maximum=MAX_FREQUENCIES if position == "nerf" else None)
    check_positive_int("pos_dim", pos_dim)
    if position == "sinusoidal":
        check_even("pos_dim", pos_dim, why="it is split between rows and columns")
        if pos_dim % 4:
            raise ValueError(f"`pos_dim` must be a multiple of 4 (two even halves), got {pos_dim}")


def grid_coordinates(
    height: int,
    width: int,
    *,
    position: Literal["nerf", "sinusoidal"] = "nerf",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (row, column) coordinates of every pixel, in the units the encoding expects: ``(H, W, 2)`` float64.

    ``"nerf"``: normalised to ``[-1, 1]`` along each axis (0 for an axis of length 1).
    ``"sinusoidal"``: integer pixel indices.
    """
    check_positive_int("height", height)
    check_positive_int("width", width)
    check_choice("position", position, ("nerf", "sinusoidal"))
    check_table_fits({"height": height, "width": width}, (height, width, 2), torch.float64, device)
    axes = []
    for n in (height, width):
        v = torch.arange(n, device=device, dtype=torch.float64)
        axes.append(v / (n - 1) * 2 - 1 if position == "nerf" and n > 1 else v)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _check_coordinates(name: str, coords: Any) -> torch.Tensor:
    """``(*, 2)`` (row, column) coordinates: a finite integer or float32/float64 tensor."""
    coords = check_positions(name, coords)
    if coords.ndim == 0 or coords.shape[-1] != 2:
        raise ValueError(f"`{name}` must have a last dimension of 2 (row, column), got {tuple(coords.shape)}")
    return coords


def encode_coordinates(
    coords: torch.Tensor,
    *,
    position: Literal["nerf", "sinusoidal"] = "nerf",
    num_frequencies: int = 4,
    pos_dim: int = 16,
) -> torch.Tensor:
    """Position encoding of (row, column) coordinates ``(*, 2)``: ``(*, e)`` float64.

    ``"nerf"``: NeRF bands with the raw input, ``e = 2 (2 L + 1)``. ``"sinusoidal"``: the sinusoidal
    encoding of the row (first ``pos_dim / 2`` features) and of the column (last ``pos_dim / 2``),
    ``e = pos_dim``.
    """
    _check_position_args(position, num_frequencies, pos_dim)
    coords = _check_coordinates("coords", coords)
    coords = coords.to(torch.float64)
    if position == "sinusoidal":
        return torch.cat((sinusoidal(coords[..., 0], pos_dim // 2), sinusoidal(coords[..., 1], pos_dim // 2)), -1)
    return nerf_encoding(coords, num_frequencies)


def grid_encoding(
    height: int,
    width: int,
    *,
    position: Literal["nerf", "sinusoidal"] = "nerf",
    num_frequencies: int = 4,
    pos_dim: int = 16,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """:func:`encode_coordinates` of :func:`grid_coordinates`: ``(H, W, e)`` float64."""
    coords = grid_coordinates(height, width, position=position, device=device)
    return encode_coordinates(coords, position=position, num_frequencies=num_frequencies, pos_dim=pos_dim)


@register(
    "hyper_conv",
    paper="Ha et al. 2016, arXiv:1609.09106",
    summary="Convolution whose kernels a hypernetwork generates per pixel from a position encoding.",
)
class HyperConv2d(EncodingModule):
    """A same-padded convolution whose kernel at each pixel is generated from that pixel's position.

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (``kernel_size`` odd).
        mode: ``"kernel"`` (generate each kernel) or ``"modulation"`` (scale a shared kernel's slices).
        position: ``"nerf"`` or ``"sinusoidal"``, the encoding of the pixel coordinates.
        num_frequencies: NeRF bands per coordinate (``position="nerf"``).
        pos_dim: width of the sinusoidal encoding (``position="sinusoidal"``), a multiple of 4.
        hidden: width of Ha et al.'s per-input-channel vectors (``mode="kernel"``).
    """

    model_arguments = ("in_channels", "out_channels", "kernel_size")

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        kernel_size: int = 3,
        *,
        mode: Literal["kernel", "modulation"] = "kernel",
        position: Literal["nerf", "sinusoidal"] = "nerf",
        num_frequencies: int = 4,
        pos_dim: int = 16,
        hidden: int = 8,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd for same padding, got {kernel_size}")
        self.mode = check_choice("mode", mode, ("kernel", "modulation"))
        self.position = check_choice("position", position, ("nerf", "sinusoidal"))
        self.num_frequencies = check_int("num_frequencies", num_frequencies, minimum=0)
        _check_position_args(position, num_frequencies, pos_dim)
        self.pos_dim = pos_dim
        self.embed_dim = 2 * (2 * num_frequencies + 1) if position == "nerf" else pos_dim
        # an upper bound of either mode's parameters, named by the user's own arguments
        check_positive_int("hidden", hidden)
        square = kernel_size * kernel_size
        count = (self.embed_dim + 1) * in_channels * hidden + (hidden + 1 + in_channels) * out_channels * square
        sizes = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size, "hidden": hidden}
        sizes["num_frequencies" if position == "nerf" else "pos_dim"] = num_frequencies if position == "nerf" else pos_dim
        check_layers_fit(sizes, count, dtype, device)
        kw = {"device": device, "dtype": dtype}
        if mode == "kernel":
            self.hyper = HyperKernel(self.embed_dim, in_channels, out_channels, kernel_size, hidden=hidden, **kw)
        else:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **kw))
            self.hyper = nn.Linear(self.embed_dim, out_channels * in_channels, **kw)
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if check_bool("bias", bias) else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size**2
        if self.mode == "modulation":
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)
            # start as the plain shared convolution: every scale is 1
            nn.init.zeros_(self.hyper.weight)
            nn.init.ones_(self.hyper.bias)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -(fan_in**-0.5), fan_in**-0.5)

    @property
    def out_dim(self) -> int:
        """Channels of the output."""
        return self.out_channels

    def generate_kernels(self, positions: torch.Tensor) -> torch.Tensor:
        """The kernel used at each of the given pixel coordinates: ``(H, W, 2)`` -> ``(H, W, out, in, k, k)``."""
        p = next(self.parameters())
        square = (self.kernel_size, self.kernel_size)
        positions = _check_coordinates("positions", positions)  # before .to() below, which a list does not have
        if positions.ndim:
            shape = (*positions.shape[:-1], self.out_channels, self.in_channels, *square)
            check_fits("positions", tuple(positions.shape), shape, p.dtype, p.device)
        z = encode_coordinates(
            positions.to(p.device), position=self.position, num_frequencies=self.num_frequencies, pos_dim=self.pos_dim
        ).to(p.dtype)
        if self.mode == "kernel":
            return self.hyper(z)
        # (H, W, out in) -> (H, W, out, in, 1, 1) scales of the shared kernel's slices
        scale = self.hyper(z).unflatten(-1, (self.out_channels, self.in_channels))[..., None, None]
        return self.weight * scale

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, in, H, W)`` -> ``(b, out, H, W)``.

        positions: optional ``(H, W, 2)`` (row, column) coordinates of the pixels of ``x``, in the
        units of :func:`grid_coordinates` (e.g. those of a crop of a larger image); the default is
        ``grid_coordinates(H, W)``, and passing that explicitly gives the same result.
        """
        x = check_float_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if x.numel() == 0:  # no pixels (or no images): an empty map of the output's shape
            return x.new_zeros(x.shape[0], self.out_channels, height, width)
        if positions is None:
            positions = grid_coordinates(height, width, position=self.position, device=x.device)
        elif not isinstance(positions, torch.Tensor) or positions.shape != (height, width, 2):
            shape = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise ValueError(f"`positions` must have shape (H, W, 2) = ({height}, {width}, 2), got {shape}")
        dtype = next(self.parameters()).dtype
        shape = (height, width, self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        check_fits("x", tuple(x.shape), shape, dtype, x.device)  # one kernel per pixel
        out = conv2d_per_position(x, self.generate_kernels(positions))
        return out if self.bias is None else out + self.bias[:, None, None].to(out.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={self.mode!r}, "
            f"position={self.position!r}, embed_dim={self.embed_dim}"
        )
