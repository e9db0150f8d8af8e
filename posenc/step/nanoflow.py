"""A small NanoFlow: affine couplings that share one network, conditioned on the flow index.

After Lee et al. 2020 (arXiv:2006.06280): instead of ``K`` separate coupling networks, one network
``f`` serves every step, and the step is told which one it is by the flow-indication embedding
``e_k`` (:class:`posenc.step.flow_index.FlowIndexEmbedding`). Step ``k`` splits ``x`` into
``(x_a, x_b)``, computes ``(s, t) = f([x_a, e_k])`` and maps ``x_b -> x_b exp(tanh s) + t``, then
reverses the feature order so the next step transforms the other part (as Glow's reversal does).
The base density is a standard normal. This is a toy-sized demonstration for low-dimensional data,
not NanoFlow's WaveGlow-based vocoder.

Verified in ``tests/step/test_nanoflow.py``: the log-determinant against the autograd Jacobian in
float64, the density integrating to one on a grid, the inverse reconstructing its input, and
training on a ring of eight Gaussians (the log-likelihood rises).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc.core.validation import (
    check_dtype_matches,
    check_fits,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
)
from posenc.step.flow_index import FlowIndexEmbedding


class NanoFlow(nn.Module):
    """``num_flows`` affine-coupling steps sharing one conditioner.

    Args:
        dim: data dimension, >= 2.
        num_flows: ``K``, the number of coupling steps.
        hidden: width of the shared conditioner's two hidden layers.
        embed_dim: width of the flow-index embedding.
    """

    def __init__(
        self,
        dim: int = 2,
        num_flows: int = 8,
        *,
        hidden: int = 64,
        embed_dim: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=2)
        self.num_flows = check_positive_int("num_flows", num_flows)
        check_positive_int("hidden", hidden)
        check_positive_int("embed_dim", embed_dim)  # the flow-index embedding would name it `dim`
        self.split = dim // 2
        # the embedding table and the conditioner's three layers, named by the flow's own arguments
        out = dim - self.split
        count = num_flows * embed_dim + (self.split + embed_dim + 1) * hidden + (hidden + 1) * (hidden + 2 * out)
        check_layers_fit({"dim": dim, "num_flows": num_flows, "hidden": hidden, "embed_dim": embed_dim}, count, dtype, device)
        kw = {"device": device, "dtype": dtype}
        self.flow_embedding = FlowIndexEmbedding(num_flows, embed_dim, **kw)
        self.net = nn.Sequential(
            nn.Linear(self.split + embed_dim, hidden, **kw),
            nn.ReLU(),
            nn.Linear(hidden, hidden, **kw),
            nn.ReLU(),
            nn.Linear(hidden, 2 * out, **kw),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The constructor's zero last layer, after the layers' own draws (see :mod:`posenc.core.meta`)."""
        # zero last layer: every step starts as the identity, which keeps early training stable
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, x_a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.flow_embedding(k).expand(*x_a.shape[:-1], -1)  # (*, embed_dim)
        log_s, t = self.net(torch.cat((x_a, e), dim=-1)).chunk(2, dim=-1)
        return torch.tanh(log_s), t

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = check_dtype_matches(name, check_float_tensor(name, x), self, owner="the flow")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"`{name}` must have last dimension dim={self.dim}, got shape {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to latent. x: ``(*, dim)`` -> ``z: (*, dim)``, ``log|det dz/dx|: (*,)``."""
        x = self._check(x, "x")
        log_det = x.new_zeros(x.shape[:-1])
        for k in range(self.num_flows):
            x_a, x_b = x[..., : self.split], x[..., self.split :]
            log_s, t = self._scale_shift(x_a, k)
            x = torch.cat((x_a, x_b * log_s.exp() + t), dim=-1).flip(-1)
            log_det = log_det + log_s.sum(-1)
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent to data. z: ``(*, dim)`` -> ``(*, dim)``."""
        z = self._check(z, "z")
        for k in reversed(range(self.num_flows)):
            z = z.flip(-1)
            z_a, z_b = z[..., : self.split], z[..., self.split :]
            log_s, t = self._scale_shift(z_a, k)
            z = torch.cat((z_a, (z_b - t) * (-log_s).exp()), dim=-1)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of ``x`` under the flow: ``(*, dim)`` -> ``(*,)``."""
        z, log_det = self(x)
        base = -0.5 * (z**2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return base + log_det

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, dim)`` samples; ``n`` an int >= 0."""
        w = self.net[0].weight
        check_fits("n", check_int("n", n, minimum=0), (n, self.dim), w.dtype, w.device)
        z = torch.randn(n, self.dim, generator=generator, device=w.device, dtype=w.dtype)
        return self.inverse(z)
