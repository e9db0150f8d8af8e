"""StyleGAN's learned constant input (Karras et al. 2018, arXiv:1812.04948) and a small
style-modulated generator stem that starts from it.

StyleGAN's synthesis network does not start from the latent: it starts from a learned
``c x 4 x 4`` tensor, the same for every image, and the latent enters only through AdaIN
(adaptive instance normalisation, section 2 of the paper):

    AdaIN(x_i, y) = y_{s,i} * (x_i - mu(x_i)) / sigma(x_i) + y_{b,i}

with the style ``y = (y_s, y_b)`` a learned affine map of ``w = mapping(z)``. On aligned data
(faces) the constant acts as a learned position encoding of the first feature map (Xu et al.
2020, arXiv:2012.05217), which :class:`StyleGenerator` lets one compare with the explicit inputs
of :mod:`posenc.spatial.gan_encodings`: ``StyleGenerator(input="constant_input")`` versus
``StyleGenerator(input="gan_multiscale")`` or any module with the same ``forward(batch, *, size)``.

The stem follows the paper's first synthesis block (constant, noise, AdaIN, 3x3 conv, noise,
AdaIN) and adds ``upsamples`` blocks (2x upsample, conv, noise, AdaIN) and a 1x1 to-image layer;
equalised learning rate, style mixing and truncation are left out. Verified against a float64
transcription of the AdaIN formula (``tests/spatial/test_constant_input.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import EncodingModule
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import create, register
from posenc.core.validation import (
    check_batch,
    check_bool,
    check_dtype_matches,
    check_float,
    check_float_tensor,
    check_int,
    check_layers_fit,
    check_positive_int,
    check_same_device,
    check_table_fits,
)


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Adaptive instance normalisation: x ``(b, c, h, w)``; scale, bias ``(b, c)``. Returns ``x``'s shape.

    The statistics are taken per image and channel over ``(h, w)`` (biased variance), in float32 or better.
    """
    check_float_tensor("x", x, ndim=4)
    check_float_tensor("scale", scale)
    check_float_tensor("bias", bias)
    eps = check_float("eps", eps, minimum=0.0)
    if scale.shape != x.shape[:2] or bias.shape != x.shape[:2]:
        raise ValueError(
            f"`scale` and `bias` must have shape (b, c) = {tuple(x.shape[:2])} to match `x`, "
            f"got {tuple(scale.shape)}, {tuple(bias.shape)}"
        )
    check_same_device(x=x, scale=scale, bias=bias)
    if x.numel() == 0:
        return x.clone()
    xf = x.to(arithmetic_dtype(x.dtype))
    mean = xf.mean(dim=(2, 3), keepdim=True)
    var = xf.var(dim=(2, 3), keepdim=True, unbiased=False)
    out = (xf - mean) * torch.rsqrt(var + eps) * scale[:, :, None, None] + bias[:, :, None, None]
    return out.to(x.dtype)


@register(
    "constant_input",
    paper="Karras et al. 2018, arXiv:1812.04948",
    summary="StyleGAN's learned c x 4 x 4 tensor broadcast over the batch as the generator's starting map.",
)
class ConstantInput(EncodingModule):
    """A learned ``(channels, size, size)`` tensor broadcast over the batch.

    ``forward(batch)`` -> ``(b, channels, size, size)``; ``batch`` an int or a tensor whose first axis
    is the batch. Initialised from N(0, 1) (StyleGAN2's choice; StyleGAN used ones, which the
    instance normalisation that follows would flatten without the noise inputs).
    """

    def __init__(
        self,
        channels: int = 512,
        size: int = 4,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.out_channels = check_positive_int("channels", channels)
        self.size = (check_positive_int("size", size),) * 2
        check_table_fits({"channels": channels, "size": size}, (channels, size, size), dtype, device)
        self.weight = nn.Parameter(torch.empty(1, channels, size, size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, batch: int | torch.Tensor, *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        b = check_batch("batch", batch)
        # an (h, w) pair may come as a list, as the explicit inputs of gan_encodings take it
        if size is not None and (tuple(size) if isinstance(size, (tuple, list)) else (size, size)) != self.size:
            raise ValueError(f"`size` must be {self.size} for a learned constant input, got {size!r}")
        return self.weight.expand(b, -1, -1, -1)

    def extra_repr(self) -> str:
        return f"channels={self.out_channels}, size={self.size[0]}"


class NoiseInjection(nn.Module):
    """StyleGAN's per-pixel noise, scaled by a learned per-channel factor (initialised to 0)."""

    def __init__(self, channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)


class AdaIN(nn.Module):
    """:func:`adain` with the style computed from ``w`` by a learned affine map (scale biased to 1)."""

    def __init__(self, channels: int, w_dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.w_dim = check_positive_int("w_dim", w_dim)
        check_layers_fit({"channels": channels, "w_dim": w_dim}, (w_dim + 1) * 2 * channels, dtype, device)
        self.affine = nn.Linear(w_dim, 2 * channels, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The scale's bias 1 and the shift's 0, after the affine map's own draw (see :mod:`posenc.core.meta`)."""
        with torch.no_grad():
            self.affine.bias[: self.channels].fill_(1.0)
            self.affine.bias[self.channels :].zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x ``(b, channels, h, w)`` styled by ``w`` ``(b, w_dim)``."""
        check_float_tensor("w", w, ndim=2)
        if w.shape[1] != self.w_dim:
            raise ValueError(f"`w` must have w_dim={self.w_dim} features, got shape {tuple(w.shape)}")
        check_dtype_matches("w", w, self, owner="AdaIN")
        check_same_device(w=w, weight=self.affine.weight)
        scale, bias = self.affine(w).chunk(2, dim=-1)
        return adain(x, scale, bias)


class StyleLayer(nn.Module):
    """Optional 2x upsample, 3x3 conv, noise, leaky ReLU, AdaIN."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, *, upsample: bool, conv: bool, noise: bool, **kw) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, **kw) if conv else None
        self.noise = NoiseInjection(c_out, **kw) if noise else None
        self.adain = AdaIN(c_out, w_dim, **kw)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if self.conv is not None:
            x = self.conv(x)
        if self.noise is not None:
            x = self.noise(x)
        return self.adain(F.leaky_relu(x, 0.2), w)


class StyleGenerator(nn.Module):
    """A small style-based generator stem: ``z (b, z_dim)`` -> image ``(b, out_channels, H, W)``.

    Args:
        z_dim, w_dim: latent and intermediate-latent widths.
        channels: feature channels of every layer.
        out_channels: image channels.
        input: ``"constant_input"``, ``"gan_multiscale"`` (built with ``**input_kwargs``), or a module
            with ``out_channels`` and ``forward(batch, *, size=None) -> (b, c, h, w)``. An input whose
            channels differ from ``channels`` goes through a 1x1 convolution first.
        size: side of the input grid for ``"constant_input"`` (4 in StyleGAN).
        upsamples: 2x blocks after the first one; the image side is ``size * 2**upsamples``.
        mapping_layers: depth of the MLP ``z -> w``.
        noise: StyleGAN's per-pixel noise inputs.
    """

    def __init__(
        self,
        z_dim: int = 32,
        w_dim: int = 32,
        channels: int = 32,
        out_channels: int = 3,
        *,
        input: str | nn.Module = "constant_input",
        size: int = 4,
        upsamples: int = 1,
        mapping_layers: int = 2,
        noise: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **input_kwargs: Any,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.z_dim = check_positive_int("z_dim", z_dim)
        check_positive_int("w_dim", w_dim)
        check_positive_int("channels", channels)
        check_int("upsamples", upsamples, minimum=0)
        check_int("mapping_layers", mapping_layers, minimum=1)
        check_positive_int("out_channels", out_channels)
        check_bool("noise", noise)
        self.input = self._build_input(input, channels, size, input_kwargs, kw)
        c_in = self.input.out_channels
        self.project = nn.Conv2d(c_in, channels, 1, **kw) if c_in != channels else nn.Identity()
        mapping: list[nn.Module] = []
        for i in range(mapping_layers):
            mapping += [nn.Linear(z_dim if i == 0 else w_dim, w_dim, **kw), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*mapping)
        layers = [StyleLayer(channels, channels, w_dim, upsample=False, conv=False, noise=noise, **kw)]
        layers.append(StyleLayer(channels, channels, w_dim, upsample=False, conv=True, noise=noise, **kw))
        for _ in range(upsamples):
            layers.append(StyleLayer(channels, channels, w_dim, upsample=True, conv=True, noise=noise, **kw))
        self.layers = nn.ModuleList(layers)
        self.to_image = nn.Conv2d(channels, out_channels, 1, **kw)

    @staticmethod
    def _build_input(input, channels, size, input_kwargs, kw) -> nn.Module:
        if isinstance(input, nn.Module):
            if input_kwargs:
                raise ValueError(f"input keyword arguments {sorted(input_kwargs)} need `input` to be a registry name")
            module = input
        elif input == "constant_input":
            module = ConstantInput(channels, size, **kw, **input_kwargs)
        elif input == "gan_multiscale":
            module = create("gan_multiscale", **{"channels": channels, **input_kwargs}, device=kw["device"])
        else:
            raise ValueError(f"`input` must be 'constant_input', 'gan_multiscale' or a module, got {input!r}")
        if not isinstance(getattr(module, "out_channels", None), int):
            raise TypeError("`input` module must have an int `out_channels` and forward(batch, *, size=None)")
        return module

    def forward(self, z: torch.Tensor, *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """z: ``(b, z_dim)`` -> ``(b, out_channels, h * 2**upsamples, w * 2**upsamples)``; ``size``: input grid."""
        check_float_tensor("z", z, ndim=2)
        if z.shape[1] != self.z_dim:
            raise ValueError(f"`z` must have z_dim={self.z_dim} features, got shape {tuple(z.shape)}")
        # pixel norm of z, as in StyleGAN's mapping network
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.mapping(z)
        x = self.project(self.input(z.shape[0], size=size).to(z.dtype))
        for layer in self.layers:
            x = layer(x, w)
        return self.to_image(x)


__all__ = ["AdaIN", "ConstantInput", "StyleGenerator", "adain"]
