"""Spatial broadcast decoder (Watters et al. 2019, arXiv:1901.07017).

The latent vector ``z`` of shape ``(b, k)`` is tiled over a grid, the x and y coordinate channels
of CoordConv (-1 to 1, x first) are appended, and a stack of stride-1 convolutions maps the
``(b, k + 2, h, w)`` tensor to an image. Because every output pixel sees the same latent plus its
own coordinates, the decoder only has to learn how position and latent combine, which the paper
shows helps a VAE disentangle positional factors.

As in the paper, the convolutions are unpadded by default: the latent is tiled over a grid larger
than the requested ``(h, w)`` by ``layers * (kernel_size - 1)`` and the valid convolutions shrink
it back, so no zero padding leaks border position; the coordinates span the enlarged grid.
``padding="same"`` tiles at ``(h, w)`` and zero-pads instead. The output size follows any
requested ``(h, w)``.

Verified against a float64 reference that tiles, appends coordinates and convolves step by step
(``tests/spatial/test_spatial_broadcast.py``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from posenc.core.base import EncodingModule
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_dtype_matches,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
)
from posenc.spatial.coordconv import add_coords


def _check_size(size) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"`size` must be an (h, w) pair of positive ints, got {size!r}")
    return tuple(check_int(f"size[{i}]", s, minimum=1) for i, s in enumerate(size))  # type: ignore[return-value]


def spatial_broadcast(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Tile ``z`` over an ``(h, w)`` grid and append coordinates: ``(b, k)`` -> ``(b, k + 2, h, w)``."""
    check_float_tensor("z", z, ndim=2)
    h, w = _check_size(size)
    check_fits("size", size, (z.shape[0], z.shape[1] + 2, h, w), z.dtype, z.device)
    # (b, k) -> (b, k, h, w)
    tiled = z[:, :, None, None].expand(-1, -1, h, w)
    return add_coords(tiled)


@register(
    "spatial_broadcast",
    paper="Watters et al. 2019, arXiv:1901.07017",
    summary="Decoder tiling the latent over the grid with x/y coordinate channels, then stride-1 convolutions.",
)
class SpatialBroadcastDecoder(EncodingModule):
    """``(b, latent_dim)`` -> ``(b, out_channels, h, w)`` for any requested ``(h, w)``.

    Args:
        latent_dim: width ``k`` of the latent.
        out_channels: image channels.
        hidden: channels of the hidden convolutions.
        layers: number of ``kernel_size`` convolutions (each followed by ReLU) before a 1x1 output conv.
        kernel_size: odd kernel of the hidden convolutions.
        padding: ``"valid"`` (the paper: tile over an enlarged grid) or ``"same"`` (zero padding).
    """

    model_arguments = ("out_channels", "kernel_size")

    def __init__(
        self,
        latent_dim: int,
        out_channels: int = 3,
        *,
        hidden: int = 32,
        layers: int = 4,
        kernel_size: int = 3,
        padding: Literal["valid", "same"] = "valid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        check_positive_int("out_channels", out_channels)
        check_positive_int("hidden", hidden)
        self.layers = check_positive_int("layers", layers)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd so the grid shrinks symmetrically, got {kernel_size}")
        self.padding = check_choice("padding", padding, ("valid", "same"))
        pad = kernel_size // 2 if padding == "same" else 0
        square = kernel_size * kernel_size
        count = (latent_dim + 2 + layers * hidden) * hidden * square + (hidden + 1) * (out_channels + layers)
        sizes = {"latent_dim": latent_dim, "out_channels": out_channels, "hidden": hidden, "layers": layers}
        check_layers_fit({**sizes, "kernel_size": kernel_size}, count, dtype, device)
        convs: list[nn.Module] = []
        width = latent_dim + 2
        for _ in range(layers):
            convs += [nn.Conv2d(width, hidden, kernel_size, padding=pad, device=device, dtype=dtype), nn.ReLU()]
            width = hidden
        convs.append(nn.Conv2d(hidden, out_channels, 1, device=device, dtype=dtype))
        self.net = nn.Sequential(*convs)

    @property
    def margin(self) -> int:
        """Rows (and columns) by which the tiled grid exceeds the output."""
        return self.layers * (self.kernel_size - 1) if self.padding == "valid" else 0

    def forward(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """z: ``(b, latent_dim)`` -> ``(b, out_channels, h, w)`` with ``(h, w) = size``."""
        check_dtype_matches("z", check_float_tensor("z", z, ndim=2), self)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"`z` must have latent_dim={self.latent_dim} features, got shape {tuple(z.shape)}")
        h, w = _check_size(size)
        return self.net(spatial_broadcast(z, (h + self.margin, w + self.margin)))


class VAELoss(NamedTuple):
    total: torch.Tensor  #: reconstruction + beta * kl, averaged over the batch
    reconstruction: torch.Tensor  #: Gaussian negative log-likelihood (up to a constant), per image
    kl: torch.Tensor  #: KL(q(z|x) || N(0, I)), per image


def vae_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *, beta: float = 1.0, sigma: float = 1.0
) -> VAELoss:
    """The (beta-)VAE objective with a Gaussian decoder of standard deviation ``sigma``.

    recon, x: ``(b, c, h, w)``; mu, logvar: ``(b, k)``.
    """
    check_float("beta", beta, minimum=0.0)
    check_float("sigma", sigma, positive=True)
    check_float_tensor("x", x, ndim=4)
    check_float_tensor("recon", recon)
    if recon.shape != x.shape:
        raise ValueError(f"`recon` must have the shape of `x` {tuple(x.shape)}, got {tuple(recon.shape)}")
    # (b, k) each: a (b, 1) or (1, k) logvar would broadcast against mu into a wrong KL
    check_float_tensor("mu", mu, ndim=2)
    check_float_tensor("logvar", logvar)
    if mu.shape[0] != x.shape[0] or logvar.shape != mu.shape:
        raise ValueError(
            f"`mu` and `logvar` must both have shape (b, k) with b = {x.shape[0]} (the batch of `x`), "
            f"got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    rec = 0.5 * (recon - x).square().flatten(1).sum(1) / sigma**2
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    return VAELoss((rec + beta * kl).mean(), rec.mean(), kl.mean())


class BroadcastVAE(nn.Module):
    """A small VAE: strided convolutional encoder, spatial broadcast decoder.

    ``forward(x)`` returns ``(recon, mu, logvar)`` for ``x`` of shape ``(b, in_channels, h, w)``;
    the encoder pools globally, so any ``(h, w)`` works. Use :func:`vae_loss` on the outputs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_dim: int = 8,
        *,
        hidden: int = 32,
        decoder_layers: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_positive_int("latent_dim", latent_dim)
        check_positive_int("hidden", hidden)  # the encoder is built before the decoder checks it
        kw = {"device": device, "dtype": dtype}
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1, **kw),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1, **kw),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, 2 * latent_dim, **kw),
        )
        self.decoder = SpatialBroadcastDecoder(latent_dim, in_channels, hidden=hidden, layers=decoder_layers, **kw)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``(b, c, h, w)`` -> ``mu, logvar``, each ``(b, latent_dim)``."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z, (x.shape[-2], x.shape[-1])), mu, logvar


__all__ = ["BroadcastVAE", "SpatialBroadcastDecoder", "VAELoss", "spatial_broadcast", "vae_loss"]
