"""wav2vec 2.0's convolutional relative positional embedding (Baevski et al. 2020,
arXiv:2006.11477, section 2; fairseq ``TransformerEncoder.pos_conv``).

A wide grouped convolution over time (kernel 128, 16 groups by default) with weight normalisation
along the kernel axis (``dim=2``, as fairseq), padded by ``kernel_size // 2`` on both sides; an
even kernel then yields one frame too many and the last is dropped (fairseq's ``SamePad``); GELU;
the result is added to the input::

    x + GELU(conv(x))

Initialisation follows fairseq: weights ~ N(0, 4 / (kernel_size * dim)), bias 0, weight norm
applied afterwards. The centred kernel sees later frames, so the module is for bidirectional
encoders only (``supports_causal = False``): a causal model built with it raises a ``ValueError``
and ``posenc check`` checks it as an encoder (finite outputs, explicit positions; "encoder only (no
cache)").

Verified against a float64 loop over groups and taps in tests/context/test_wav2vec2_conv.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.validation import (
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
    check_same_device,
    check_shape,
)


def _check_groups(channels: int, groups: int) -> None:
    check_positive_int("groups", groups)
    if channels % groups:
        raise ValueError(f"`groups` must divide the channel count {channels}, got groups={groups}")


def wav2vec2_conv_embedding(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, groups: int = 16
) -> torch.Tensor:
    """``x + GELU(same_pad(conv1d(x)))``: x ``(b, n, c)``, weight ``(c, c / groups, k)`` -> ``(b, n, c)``."""
    check_float_tensor("x", x, ndim=3)
    check_float_tensor("weight", weight, ndim=3)
    c = x.shape[-1]
    if weight.shape[0] != c:
        raise ValueError(f"`x` must have as many channels as `weight` {tuple(weight.shape)} outputs, got {c}")
    _check_groups(c, groups)
    if weight.shape[1] != c // groups or weight.shape[2] < 1:
        raise ValueError(f"`weight` must have shape ({c}, {c // groups}, kernel_size), got {tuple(weight.shape)}")
    if bias is not None:
        check_shape("bias", check_float_tensor("bias", bias), (c,), why="(one per channel)")
    check_same_device(x=x, weight=weight, bias=bias)
    k = weight.shape[-1]
    if x.shape[1] == 0:  # no frames: nothing to convolve, the input passes through
        return x.clone()
    # (b, n, c) -> (b, c, n) for conv1d
    bias = None if bias is None else bias.to(x.dtype)
    y = F.conv1d(x.transpose(1, 2), weight.to(x.dtype), bias, padding=k // 2, groups=groups)
    if k % 2 == 0:
        y = y[..., :-1]  # an even kernel with k // 2 padding each side gives n + 1 frames
    return x + F.gelu(y).transpose(1, 2)


@register(
    "wav2vec2_conv",
    paper="Baevski et al. 2020, arXiv:2006.11477",
    summary="Wide grouped, weight-normalised Conv1d + GELU added to the input: a convolutional relative embedding.",
)
class Wav2Vec2ConvPositionEmbedding(PositionEncoding):
    """Grouped, weight-normalised convolution over ``(b, n, dim)``, GELU, added to the input.

    Args:
        dim: channels (model width); divisible by ``groups``.
        kernel_size: taps (>= 1; 128 in wav2vec 2.0).
        groups: convolution groups (16 in wav2vec 2.0).
    """

    model_arguments = ("dim", "kernel_size")
    hooks = frozenset({"input"})
    packing_unsupported = "its convolution reads neighbouring tokens, which in a packed row belong to other documents"
    supports_causal = False

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 128,
        groups: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        _check_groups(dim, groups)
        self.groups = groups
        check_layers_fit({"dim": dim, "kernel_size": kernel_size}, dim * (dim // groups) * kernel_size + dim, dtype, device)
        conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups, device=device, dtype=dtype)
        if conv.weight.device.type != "meta":
            self._init_conv(conv.weight, conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)

    def _init_conv(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        nn.init.normal_(weight, mean=0.0, std=math.sqrt(4.0 / (self.kernel_size * self.dim)))
        nn.init.zeros_(bias)

    def reset_parameters(self) -> None:
        """wav2vec 2.0's initialisation (after ``Conv1d``'s own; see :mod:`posenc.core.meta`), written
        through the weight norm so that its magnitude and direction are derived from the new weight."""
        weight = torch.empty_like(self.conv.parametrizations.weight.original1)
        self._init_conv(weight, self.conv.bias)
        with torch.no_grad():
            self.conv.weight = weight

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        check_float_tensor("x", x, ndim=3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim}, got {x.shape[-1]}")
        return wav2vec2_conv_embedding(x, self.conv.weight, self.conv.bias, groups=self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(b, n, dim)`` -> ``(b, n, dim)``."""
        check_float_tensor("x", x, ndim=3)
        return self.encode_input(x, positions=Positions(x.shape[1]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}, groups={self.groups}"
