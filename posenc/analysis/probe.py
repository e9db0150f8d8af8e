"""How much absolute position a CNN's features hold (Islam et al. 2020, arXiv:2001.08248; survey 2.5).

The paper freezes a CNN, trains a small read-out on its features to predict content-independent
position maps (horizontal and vertical gradients, a centred Gaussian, stripes) and scores the
prediction by Spearman correlation (SPC) and mean absolute error (MAE). A CNN without padding is
translation-equivariant in its interior, so a read-out that sees one pixel's features at a time can
only guess; zero padding leaks where the borders are, and depth carries that inward.

Here the read-out is a per-pixel MLP (1x1 convolutions), so it cannot find position by itself: any
correlation it reaches comes from the frozen features. :func:`probe_cnn` builds one small CNN with
zero, reflect, circular or no padding and identical weights, for the paper's padding comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.validation import check_choice, check_finite, check_float, check_int, check_tensor

Padding = Literal["zero", "reflect", "circular", "none"]
PADDINGS: tuple[str, ...] = ("zero", "reflect", "circular", "none")
PATTERNS: tuple[str, ...] = ("horizontal", "vertical", "gaussian", "horizontal_stripes", "vertical_stripes")


def check_pattern_names(name: str, names: Sequence[str]) -> Sequence[str]:
    """A non-empty sequence of names from :data:`PATTERNS` (a single string is refused, not read letter by letter)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        shown = repr(names) if isinstance(names, str) else type(names).__name__
        raise TypeError(f"`{name}` must be a sequence of pattern names such as ['horizontal'], got {shown}")
    if not names:
        raise ValueError(f"`{name}` must name at least one of {', '.join(map(repr, PATTERNS))}; got none")
    for pattern in names:
        check_choice(name, pattern, PATTERNS)
    return names


def position_patterns(h: int, w: int, names: Sequence[str] = PATTERNS, *, stripes: int = 4) -> dict[str, torch.Tensor]:
    """Target maps ``(h, w)`` in [0, 1] that depend on position only.

    ``horizontal``: 0 at the left edge to 1 at the right; ``vertical``: top to bottom; ``gaussian``: a
    centred Gaussian of standard deviation a quarter of the size; ``horizontal_stripes`` /
    ``vertical_stripes``: ``stripes`` periods of a cosine along y / along x.
    """
    check_int("h", h, minimum=1)
    check_int("w", w, minimum=1)
    check_int("stripes", stripes, minimum=1)
    check_pattern_names("names", names)
    y = torch.linspace(0, 1, h).unsqueeze(1).expand(h, w)
    x = torch.linspace(0, 1, w).unsqueeze(0).expand(h, w)
    makers: dict[str, Callable[[], torch.Tensor]] = {
        "horizontal": lambda: x,
        "vertical": lambda: y,
        "gaussian": lambda: torch.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / (2 * 0.25**2)),
        "horizontal_stripes": lambda: 0.5 + 0.5 * torch.cos(2 * math.pi * stripes * y),
        "vertical_stripes": lambda: 0.5 + 0.5 * torch.cos(2 * math.pi * stripes * x),
    }
    out = {}
    for name in names:
        out[name] = makers[name]().contiguous()
    return out


def probe_cnn(
    padding: Padding,
    *,
    in_channels: int = 3,
    width: int = 16,
    depth: int = 4,
    kernel_size: int = 3,
    seed: int = 0,
) -> nn.Sequential:
    """``depth`` convolutions (``kernel_size``, stride 1) with ReLUs; the same weights for every ``padding``.

    padding: ``"zero"``, ``"reflect"``, ``"circular"`` (each keeps the size) or ``"none"`` (valid
    convolutions: the map shrinks by ``kernel_size - 1`` per layer). ``(b, in_channels, h, w)`` ->
    ``(b, width, h', w')``.
    """
    check_choice("padding", padding, PADDINGS)
    check_int("in_channels", in_channels, minimum=1)
    check_int("width", width, minimum=1)
    check_int("depth", depth, minimum=1)
    check_int("kernel_size", kernel_size, minimum=1)
    check_int("seed", seed)
    if kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be odd so that padding keeps the size, got {kernel_size}")
    generator = torch.Generator().manual_seed(seed)
    pad = 0 if padding == "none" else kernel_size // 2
    mode = {"zero": "zeros", "none": "zeros"}.get(padding, padding)
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(depth):
        conv = nn.Conv2d(channels, width, kernel_size, padding=pad, padding_mode=mode)
        bound = 1 / math.sqrt(channels * kernel_size**2)
        with torch.no_grad():
            # He-style scale so activations keep their size through the stack; drawn from `seed` only
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0) * bound)
            conv.bias.copy_((torch.rand(conv.bias.shape, generator=generator) * 2 - 1) * bound)
        layers += [conv, nn.ReLU()]
        channels = width
    return nn.Sequential(*layers)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their mean rank (as Spearman's coefficient needs)."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    return (last - (counts.double() - 1) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two tensors of one shape (flattened); 0 when either is constant."""
    check_finite("a", check_tensor("a", a))
    check_finite("b", check_tensor("b", b))
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _average_ranks(a.detach().flatten().double()), _average_ranks(b.detach().flatten().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return 0.0 if denominator == 0 else (ra @ rb).item() / denominator


@dataclass(frozen=True)
class ProbeResult:
    """Per pattern: Spearman correlation and MAE of the read-out on held-out images."""

    spearman: dict[str, float]
    mae: dict[str, float]
    feature_size: tuple[int, int]
    predictions: dict[str, torch.Tensor] = field(repr=False)  #: ``(h', w')`` read-out of the first test image

    @property
    def mean_spearman(self) -> float:
        return sum(self.spearman.values()) / len(self.spearman)

    def as_dict(self) -> dict[str, object]:
        return {
            "spearman": dict(self.spearman),
            "mae": dict(self.mae),
            "mean_spearman": self.mean_spearman,
            "feature_size": list(self.feature_size),
        }


def _features(model: Callable[[torch.Tensor], object], images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    maps = list(out) if isinstance(out, (list, tuple)) else [out]
    for i, m in enumerate(maps):
        if not isinstance(m, torch.Tensor) or m.ndim != 4:
            raise ValueError(f"`model` must return (b, c, h, w) feature maps, got output {i} of {type(m).__name__}")
        if 0 in m.shape[1:]:  # nothing to read position from (valid convolutions past the image's size, say)
            raise ValueError(f"`model` returned feature map {i} without channels or pixels, of shape {tuple(m.shape)}")
        if m.is_floating_point() and not bool(torch.isfinite(m).all()):
            raise ValueError(f"`model` returned NaN or inf in feature map {i}")
    size = maps[0].shape[-2:]
    # several scales (a feature pyramid) are resized to the first one's size, as the paper's PosENet does
    maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    return torch.cat(maps, dim=1).detach().float()


def position_probe(
    model: Callable[[torch.Tensor], object],
    images: torch.Tensor,
    *,
    patterns: Sequence[str] = PATTERNS,
    train_fraction: float = 0.5,
    steps: int = 150,
    hidden: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
) -> ProbeResult:
    """Train a read-out on ``model``'s frozen features to predict each position pattern; score it.

    model: any CNN, ``(b, c, h, w)`` -> feature map ``(b, c', h', w')`` or a list of maps (resized
    to the first's size); images: ``(b, c, h, w)`` with ``b >= 2``, split into a training part and a
    held-out part. Targets are made at the feature map's size ``(h', w')``. The read-out is
    ``1x1 conv -> ReLU -> 1x1 conv`` trained with Adam on the mean squared error, full batch.
    Spearman correlation and MAE are averaged over held-out images.
    """
    check_finite("images", check_tensor("images", images, ndim=4))
    check_pattern_names("patterns", patterns)
    check_float("train_fraction", train_fraction, minimum=0.0, maximum=1.0)
    check_int("steps", steps, minimum=1)
    check_int("hidden", hidden, minimum=1)
    check_float("lr", lr, positive=True)
    check_int("seed", seed)
    b = images.shape[0]
    n_train = min(max(1, round(b * train_fraction)), b - 1) if b > 1 else 0
    if n_train < 1:
        raise ValueError(f"`images` needs at least 2 images (training and held-out), got {b}")
    was_training = model.training if isinstance(model, nn.Module) else False
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            feats = _features(model, images)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    # per-channel standardisation from the training part keeps one learning rate fit for any model
    mean = feats[:n_train].mean(dim=(0, 2, 3), keepdim=True)
    std = feats[:n_train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    feats = (feats - mean) / std
    train, test = feats[:n_train], feats[n_train:]
    h, w = feats.shape[-2:]
    targets = {k: v.to(feats.device) for k, v in position_patterns(h, w, patterns).items()}
    scores, errors, previews = {}, {}, {}
    for index, (name, target) in enumerate(targets.items()):
        generator = torch.Generator().manual_seed(seed + index)
        readout = nn.Sequential(nn.Conv2d(feats.shape[1], hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
        with torch.no_grad():
            for p in readout.parameters():
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) / math.sqrt(p[0].numel() if p.ndim > 1 else hidden))
        readout = readout.to(feats.device)
        opt = torch.optim.Adam(readout.parameters(), lr=lr)
        goal = target.expand(n_train, 1, h, w)
        for _ in range(steps):
            loss = F.mse_loss(readout(train), goal)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = readout(test)[:, 0]
        scores[name] = sum(spearman(p, target) for p in pred) / len(pred)
        errors[name] = (pred - target).abs().mean().item()
        previews[name] = pred[0].cpu()
    return ProbeResult(scores, errors, (h, w), previews)
