"""A coordinate MLP: an optional coordinate encoding followed by a ReLU multilayer perceptron.

The network of Tancik et al. (arXiv:2006.10739) and NeRF (arXiv:2003.08934) without the
view-direction branch: coordinates ``(*, in_dim)`` are mapped by an encoding (or passed raw), then
``depth`` linear layers of width ``width`` with ReLU between them produce ``(*, out_dim)`` values
(pixel colours, signal values, densities). ``tests/coordinate/test_mlp.py`` reproduces the
paper's central claim at toy size: with Gaussian Fourier features the MLP fits a 1-D signal with
high-frequency content far better than on raw coordinates, in the same number of steps.
"""

from __future__ import annotations

import inspect
import itertools

import torch
from torch import nn

from posenc.coordinate.base import Encoding
from posenc.core.registry import available, create, get
from posenc.core.validation import check_dtype, check_finite, check_float_tensor, check_positive_int


def _single_input(cls: type) -> bool:
    """Whether ``encoding(x)`` is a complete call (IntegratedPE also needs a covariance, for example)."""
    params = list(inspect.signature(cls.forward).parameters.values())[1:]  # past self
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


class CoordinateMLP(nn.Module):
    """Encoding, then ``depth`` linear layers (``depth - 1`` hidden ReLU layers of width ``width``).

    Args:
        in_dim: number of input coordinates.
        out_dim: number of predicted values per coordinate.
        encoding: an :class:`Encoding` module, a registry name (``"nerf"``, ``"fourier_features"``)
            built with ``in_dim`` and ``encoding_args``, or None for raw coordinates.
        width: hidden width.
        depth: number of linear layers, >= 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        encoding: Encoding | str | None = None,
        width: int = 256,
        depth: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **encoding_args,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        check_dtype("dtype", dtype)
        if isinstance(encoding, str):
            if get(encoding).family != "coordinate":  # unknown names raise listing every encoding
                names = ", ".join(info.name for info in available("coordinate") if _single_input(info.cls))
                raise ValueError(
                    f"`encoding`={encoding!r} is a {get(encoding).family} encoding, not one of coordinates; "
                    f"the coordinate MLP takes {names} or None"
                )
            encoding = create(encoding, in_dim=in_dim, device=device, **encoding_args)
            if dtype is not None:  # its tables (a hash grid's, K-planes') in the network's dtype too
                encoding = encoding.to(dtype=dtype)
        elif encoding_args:
            raise TypeError(f"encoding arguments {sorted(encoding_args)} need `encoding` given as a registry name")
        if encoding is not None:
            if not hasattr(encoding, "out_dim") or getattr(encoding, "in_dim", in_dim) != in_dim:
                raise ValueError(f"`encoding` must be a coordinate encoding with in_dim={in_dim} and an out_dim")
            if not _single_input(type(encoding)):
                raise ValueError(
                    f"`encoding` {type(encoding).__name__} takes more than the coordinates in its forward; "
                    "the coordinate MLP calls encoding(x)"
                )
        self.encoding = encoding
        features = encoding.out_dim if encoding is not None else in_dim
        widths = [features] + [width] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b, device=device, dtype=dtype))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(*, in_dim)`` coordinates -> ``(*, out_dim)``."""
        x = check_finite("x", check_float_tensor("x", x))
        if x.ndim == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"`x` must have last dimension in_dim={self.in_dim}, got shape {tuple(x.shape)}")
        features = self.encoding(x) if self.encoding is not None else x
        return self.net(features.to(self.net[0].weight.dtype))
