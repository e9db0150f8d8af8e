"""``padding_probe``: CNNs learn absolute position through zero padding (survey 2.5; Islam et al. 2020).

Part 1 (trained): the same small CNN (dilated 3 x 3 convolutions; dilations 1, 2, 4, 8 give a
31 x 31 receptive field, about the quick configuration's 32 x 32 image) with zero padding, circular
padding, no padding (valid convolutions; the output is the same output grid, read from a larger noise image) and no padding plus coordinate channels (posenc's ``add_coords``) is trained to output
content-independent position maps (horizontal gradient, Gaussian, stripes) from white-noise
images (``inputs="noise"``) or from random crops of natural photographs (``inputs="natural"``:
scikit-image's bundled photographs, randomly cropped and flipped, so no crop position is tied to its
content; the paper used the DUT-S saliency photographs). Part 2 (the paper's probe): a read-out trained on the frozen features of a randomly
initialised CNN per padding (:func:`posenc.analysis.probe.position_probe`).
Measured: Spearman correlation and MAE on held-out input images per pattern and padding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.analysis.probe import PADDINGS, PATTERNS, position_patterns, position_probe, probe_cnn, spearman
from posenc.core.extras import require
from posenc.core.validation import check_choice
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import curves_panel
from posenc.spatial.coordconv import add_coords

VARIANTS = ("zero", "circular", "none", "none+coords")
#: Steps between two logged losses of the CNNs (the plot's step axis).
LOG_EVERY = 5
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@lru_cache(maxsize=1)
def _photographs() -> tuple[torch.Tensor, ...]:
    """scikit-image's bundled colour photographs as ``(3, H, W)`` float tensors in [0, 1]."""
    data = require("skimage.data", extra="experiments", feature="padding_probe with inputs='natural'")
    return tuple(torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255.0 for name in PHOTOGRAPHS)


def input_images(kind: str, n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 3, side, side)`` inputs: white noise, or standardised random crops (randomly mirrored) of
    natural photographs, so that no image position is tied to particular content."""
    if check_choice("inputs", kind, ("noise", "natural")) == "noise":
        return torch.randn(n, 3, side, side, generator=generator)
    photos = _photographs()
    crops = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (), generator=generator))]
        top = int(torch.randint(photo.shape[1] - side + 1, (), generator=generator))
        left = int(torch.randint(photo.shape[2] - side + 1, (), generator=generator))
        crop = photo[:, top : top + side, left : left + side]
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-1)
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-2)
        crops.append((crop - crop.mean()) / crop.std().clamp_min(1e-3))
    return torch.stack(crops)


class PositionCNN(nn.Module):
    """Dilated conv stack ``(b, 3, s, s) -> (b, patterns, s', s')``; valid (``none``) variants shrink
    by ``2 * sum(dilations)``."""

    def __init__(self, variant: str, width: int, dilations: tuple[int, ...], patterns: int) -> None:
        super().__init__()
        self.coords = variant == "none+coords"
        valid = variant.startswith("none")
        mode = "circular" if variant == "circular" else "zeros"
        channels = 3 + 2 * self.coords
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [nn.Conv2d(channels, width, 3, dilation=d, padding=0 if valid else d, padding_mode=mode), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(width, patterns, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(add_coords(x) if self.coords else x)


def train_variant(ctx: Context, variant: str) -> dict[str, Any]:
    c = ctx.config
    names, size = c["patterns"], c["size"]
    ctx.manual_seed("init", variant)
    model = PositionCNN(variant, c["width"], tuple(c["dilations"]), len(names))
    # valid convolutions see a larger noise image so that their output covers the same size x size grid
    margin = 2 * sum(c["dilations"]) if variant.startswith("none") else 0
    side = size + margin
    patterns = position_patterns(size, size, names)
    target = torch.stack([patterns[n] for n in names])  # (patterns, size, size)

    def step_loss(m, step, generator, shard):
        x = input_images(c["inputs"], c["batch"], side, generator)[shard].to(ctx.device)
        return F.mse_loss(m(x), target.to(ctx.device).expand(x.shape[0], -1, -1, -1))

    ctx.train(variant, model, step_loss, steps=c["steps"], lr=c["lr"], log_every=LOG_EVERY)
    with torch.no_grad():
        x = input_images(c["inputs"], c["eval_images"], side, ctx.generator("eval"))
        pred = model(x.to(ctx.device)).cpu()
    scores = {n: sum(spearman(pred[i, j], target[j]) for i in range(len(x))) / len(x) for j, n in enumerate(names)}
    mae = {n: (pred[:, j] - target[j]).abs().mean().item() for j, n in enumerate(names)}
    return {"spearman": scores, "mae": mae, "mean_spearman": sum(scores.values()) / len(scores), "input_size": side}


def frozen_probe(ctx: Context, padding: str) -> dict[str, Any]:
    c = ctx.config
    images = input_images(c["inputs"], c["probe_images"], c["size"], ctx.generator("probe-images"))
    cnn = probe_cnn(padding, depth=c["probe_depth"], width=c["width"], seed=ctx.seed).to(ctx.device)
    result = position_probe(cnn, images.to(ctx.device), patterns=c["patterns"], steps=c["probe_steps"], seed=ctx.seed)
    return result.as_dict()


def check_crops_fit(c: dict[str, Any]) -> None:
    """Refuse, before any training, natural-photograph inputs larger than the smallest photograph."""
    if check_choice("inputs", c["inputs"], ("noise", "natural")) != "natural":
        return
    smallest = min(min(photo.shape[1:]) for photo in _photographs())
    widest = c["size"] + 2 * sum(c["dilations"])  # the valid-convolution variants read the largest crops
    if widest > smallest:
        raise ValueError(
            f"`size` ({c['size']}) is too large for inputs='natural': the valid-convolution variants read crops of "
            f"size + 2 * sum(dilations) = {widest} pixels, and the smallest photograph is {smallest} pixels a side"
        )


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    if not c["patterns"]:
        raise ValueError(f"`patterns` must name at least one of {', '.join(map(repr, PATTERNS))}; got none")
    for key, choices in (("patterns", PATTERNS), ("probe_paddings", PADDINGS)):  # before any training
        for i, value in enumerate(c[key]):
            check_choice(f"{key}[{i}]", value, choices)
    if not c["dilations"]:
        raise ValueError("`dilations` must give at least one convolution's dilation, got none")
    if c["size"] < max(c["dilations"]):  # circular padding by d wraps the image at most once
        raise ValueError(
            f"`size` ({c['size']}) must be at least the largest of `dilations` ({max(c['dilations'])}): "
            "the circular-padding CNN pads each layer by its dilation, around the image once at most"
        )
    check_crops_fit(c)
    trained = {v: ctx.unit(f"trained:{v}", lambda v=v: train_variant(ctx, v)) for v in VARIANTS}
    probe = {p: ctx.unit(f"probe:{p}", lambda p=p: frozen_probe(ctx, p)) for p in c["probe_paddings"]}
    return {
        "inputs": "white noise (content carries no position)" if c["inputs"] == "noise"
        else "random crops of natural photographs, randomly mirrored",
        "trained": trained,
        "frozen_probe": probe,
        "headline_name": "mean Spearman correlation, trained CNN",
        "headline": {v: r["mean_spearman"] for v, r in trained.items()},
    }


def plot(result: dict[str, Any], fig, images) -> None:
    ax1, ax2, ax3 = fig.subplots(1, 3)
    curves_panel(ax1, result["curves"], every=LOG_EVERY)
    m = result["metrics"]
    for ax, table, title in ((ax2, m["trained"], "trained CNN"), (ax3, m["frozen_probe"], "probe on frozen random CNN")):
        variants = list(table)
        patterns = list(next(iter(table.values()))["spearman"])
        width = 0.8 / len(patterns)
        for j, p in enumerate(patterns):
            ax.bar([i + j * width for i in range(len(variants))], [table[v]["spearman"][p] for v in variants], width, label=p)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(variants))], variants, fontsize=8)
        ax.set_title(f"Spearman correlation: {title}", fontsize=9)
        ax.legend(fontsize=6)


EXPERIMENT = Experiment(
    name="padding_probe",
    claim="CNNs without an encoding learn absolute position through zero padding",
    paper="Islam et al. 2020, arXiv:2001.08248 (Table 4)",
    section="2.5",
    quick={
        "size": 32, "width": 16, "dilations": [1, 2, 4, 8], "patterns": ["horizontal", "gaussian", "vertical_stripes"],
        "batch": 8, "steps": 200, "lr": 3e-3, "eval_images": 8, "probe_paddings": ["zero", "none"], "probe_images": 16,
        "probe_depth": 4, "probe_steps": 100, "inputs": "noise",
    },
    full={
        "size": 48, "width": 24, "dilations": [1, 2, 4, 8], "patterns": ["horizontal", "vertical", "gaussian",
        "horizontal_stripes", "vertical_stripes"], "batch": 16, "steps": 600, "lr": 2e-3, "eval_images": 32,
        "probe_paddings": ["zero", "reflect", "circular", "none"], "probe_images": 64, "probe_depth": 6, "probe_steps": 300,
        "inputs": "natural",
    },
    reference={
        "vgg16_horizontal_spearman": {"with_padding": 0.742, "without_padding": 0.381},
        "note": "Islam et al. 2020, Table 4: PosENet read-out on frozen VGG16 features, horizontal gradient",
    },
    run=run,
    plot=plot,
)
