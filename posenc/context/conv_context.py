"""Convolutional context instead of a position encoding (Mohamed et al. 2019, arXiv:1904.11660).

A stack of 1-D convolutions over the token embeddings, in front of a Transformer that has no
position encoding: each output mixes a token with its neighbours, so order becomes visible to
attention (the survey's copy task: "p가A", "가A@", ...). Each layer is Conv1d -> LayerNorm -> ReLU
over the width ``dim``, the order of the decoder convolutions in fairseq's ``asr_vggtransformer`` (the
paper's code). ``causal=True`` pads on the left only (the paper's decoder side), so no output depends
on a later input, for language modelling.

Incremental decoding: a causal stack remembers the last ``kernel_size - 1`` inputs of every layer
from its previous call and continues from them when the next call starts where that one ended
(``positions.offset``, which :class:`posenc.models.Transformer` sets to the key/value cache length);
a call that starts at offset 0 begins a new sequence. The Transformer keeps those inputs in each
key/value cache (``input_state``), so caches decoded in turn, or full passes in between, do not
disturb one another. The convolution ignores position values, so
packed sequences would leak across their boundaries.

Verified against a float64 loop over taps (``y_t = b + sum_s W_s x_{t+s-left}``) in
tests/context/test_conv_context.py, with the causality and permutation properties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_dtype_matches,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
    check_same_device,
    check_shape,
)


def context_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    causal: bool = False,
    left_context: torch.Tensor | None = None,
) -> torch.Tensor:
    """One convolution over time: x ``(b, n, c)``, weight ``(c_out, c, k)`` -> ``(b, n, c_out)``.

    Centred (``(k - 1) // 2`` frames of zeros on the left, ``k // 2`` on the right) or causal (``k - 1``
    on the left). left_context: ``(b, k - 1, c)`` inputs that precede ``x`` (causal only), used
    instead of the zeros.
    """
    check_float_tensor("x", x, ndim=3)
    check_float_tensor("weight", weight, ndim=3)
    check_bool("causal", causal)
    k = weight.shape[-1]
    if weight.shape[1] != x.shape[-1] or k < 1:
        raise ValueError(
            f"`x` must have as many channels as `weight` {tuple(weight.shape)} (c_out, c, k >= 1) takes, "
            f"got {x.shape[-1]}"
        )
    if bias is not None:
        check_shape("bias", check_float_tensor("bias", bias), (weight.shape[0],), why="(one per output channel)")
    if left_context is not None:
        check_float_tensor("left_context", left_context)
        if not causal or tuple(left_context.shape) != (x.shape[0], k - 1, x.shape[-1]):
            raise ValueError(
                f"`left_context` needs causal=True and shape {(x.shape[0], k - 1, x.shape[-1])}, "
                f"got {tuple(left_context.shape)}"
            )
    check_same_device(x=x, weight=weight, bias=bias, left_context=left_context)
    if x.shape[1] == 0:  # no frames: conv1d would reject a kernel longer than the padded input
        return x @ weight[..., 0].to(x.dtype).t()  # (b, 0, c_out)
    if left_context is not None:
        x = torch.cat([left_context.to(x.dtype), x], dim=1)
        pad = (0, 0)
    else:
        pad = (k - 1, 0) if causal else ((k - 1) // 2, k // 2)
    # (b, n, c) -> (b, c, n) for conv1d, and back
    out = F.conv1d(F.pad(x.transpose(1, 2), pad), weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    return out.transpose(1, 2)


@register(
    "conv_context",
    paper="Mohamed et al. 2019, arXiv:1904.11660",
    summary="A stack of 1-D convolutions over the token embeddings replaces the position encoding.",
)
class ConvContext(PositionEncoding):
    """Conv1d -> LayerNorm -> ReLU, ``layers`` times, on ``(b, n, dim)`` embeddings.

    Args:
        dim: model width (channels in and out).
        kernel_size: taps per convolution (>= 1; 3 in the paper's decoder).
        layers: number of convolution blocks (>= 1).
        causal: left padding only, for language models.
    """

    model_arguments = ("dim", "causal", "kernel_size")
    hooks = frozenset({"input"})
    packing_unsupported = "its convolution reads neighbouring tokens, which in a packed row belong to other documents"

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 3,
        layers: int = 2,
        causal: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        check_int("layers", layers, minimum=1)
        self.causal = check_bool("causal", causal)
        sizes = {"dim": dim, "kernel_size": kernel_size, "layers": layers}
        check_layers_fit(sizes, layers * (dim * dim * kernel_size + 3 * dim), dtype, device)
        kw = {"device": device, "dtype": dtype}
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel_size, **kw) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, **kw) for _ in range(layers))
        self._stream: tuple[int, list[torch.Tensor]] | None = None

    def _left_contexts(self, x: torch.Tensor, offset: int) -> list[torch.Tensor]:
        if offset == 0:
            return [x.new_zeros(x.shape[0], self.kernel_size - 1, self.dim) for _ in self.convs]
        if self._stream is None or self._stream[0] != offset or self._stream[1][0].shape[0] != x.shape[0]:
            raise ValueError(
                f"causal conv_context called at `positions` offset {offset}, but its previous call did not end there: "
                "incremental decoding must feed consecutive chunks of one batch, starting at offset 0"
            )
        return self._stream[1]

    def input_state(self) -> tuple[int, list[torch.Tensor]] | None:
        """The stream to continue: where the last call ended and each layer's last inputs."""
        return self._stream

    def load_input_state(self, state: tuple[int, list[torch.Tensor]] | None) -> None:
        self._stream = state

    def run(
        self, x: torch.Tensor, left_contexts: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x ``(b, n, dim)`` -> ``(b, n, dim)`` and each layer's last ``kernel_size - 1`` inputs."""
        tails = []
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            left = None if left_contexts is None else left_contexts[layer]
            if left is not None:
                seen = torch.cat([left, x], dim=1)
                tails.append(seen[:, seen.shape[1] - left.shape[1] :])
            x = F.relu(norm(context_conv1d(x, conv.weight, conv.bias, causal=self.causal, left_context=left)))
        return x, tails

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        check_float_tensor("x", x, ndim=3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim}, got {x.shape[-1]}")
        if not self.causal:
            return self.run(x)[0]
        out, tails = self.run(x, self._left_contexts(x, positions.offset))
        self._stream = (positions.offset + x.shape[1], [t.detach() for t in tails])
        return out

    def forward(self, x: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """x ``(b, n, dim)`` -> ``(b, n, dim)``; ``offset`` > 0 continues a causal stream."""
        check_dtype_matches("x", check_float_tensor("x", x, ndim=3), self)
        check_int("offset", offset, minimum=0)
        return self.encode_input(x, positions=Positions(x.shape[-2] if x.ndim == 3 else 0, offset))

    def receptive_field(self) -> int:
        """Number of input frames one output frame can see."""
        return len(self.convs) * (self.kernel_size - 1) + 1

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}, layers={len(self.convs)}, causal={self.causal}"

