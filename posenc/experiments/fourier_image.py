"""``fourier_image``: Fourier features let a coordinate MLP learn high frequencies (survey 4.1; Tancik et al. 2020).

The paper's 2-D image regression protocol: a ReLU MLP (4 layers, sigmoid output) maps a pixel's
(x, y) in [0, 1)^2 to its RGB value; it is trained full-batch with Adam on the pixels with even
coordinates and tested on the others (the odd-offset pixels). Input mappings, through posenc's
:class:`~posenc.coordinate.fourier_features.FourierFeatures`: none (raw coordinates), basic
(B = I), positional (log-spaced scales up to ``positional_max``) and Gaussian (B ~ N(0, sigma^2),
a sweep over sigma). Frequencies are in cycles per image side, so the paper's values for a
512-pixel image (positional up to 2^6, sigma 1/3/10/30) scale down with the image side.

The image: scikit-image's bundled photograph ``astronaut`` (512 x 512, area-downsampled to ``size``;
installed with ``pip install posenc[experiments]``), otherwise a procedural "natural-looking" image
(1/f noise with smooth shading and sharp-edged shapes) generated from the seed. The full
configuration keeps the paper's network, mapping size, optimiser and 2,000 steps on a 128 x 128
image (the paper's 512 x 512 takes about 16 times longer, hours on 2 CPU cores; pass
``--set size=512 --set positional_max=64`` for it). Measured: test PSNR per mapping and sigma, the
reconstructions.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.coordinate.fourier_features import FourierFeatures
from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import bar_panel


def procedural_image(size: int, generator: torch.Generator, *, oversample: int = 4) -> torch.Tensor:
    """``(size, size, 3)`` in [0, 1]: 1/f noise per channel (natural images' spectrum), shading, shapes;
    drawn at ``oversample`` times the size and area-averaged down, as a camera's pixels would."""
    side = size
    size = size * oversample
    f = torch.fft.fftfreq(size)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1.0 / size)
    img = []
    for _ in range(3):
        phase = torch.rand(size, size, generator=generator) * 2 * math.pi
        spectrum = torch.polar(radius**-1.3, phase)  # amplitude ~ 1/f^1.3, a little smoother than 1/f
        channel = torch.fft.ifft2(spectrum).real
        img.append((channel - channel.mean()) / channel.std())
    img = torch.stack(img, dim=-1) * 0.12 + 0.5
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = img + 0.2 * (y[..., None] - 0.5) * torch.tensor([0.6, 0.8, 1.0])  # sky-to-ground shading
    for _ in range(6):  # sharp-edged discs and boxes of random colour
        cx, cy, r = torch.rand(3, generator=generator).tolist()
        colour = torch.rand(3, generator=generator)
        if torch.rand((), generator=generator) < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < (0.05 + 0.15 * r) ** 2
        else:
            mask = ((x - cx).abs() < 0.05 + 0.2 * r) & ((y - cy).abs() < 0.03 + 0.1 * r)
        img[mask] = 0.5 * img[mask] + 0.5 * colour
    # (size, size, 3) -> (1, 3, size, size) -> area-averaged to (side, side, 3)
    img = F.interpolate(img.clamp(0, 1).permute(2, 0, 1)[None], size=(side, side), mode="area")
    return img[0].permute(1, 2, 0).contiguous()


def load_image(size: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """The test image ``(size, size, 3)`` and where it came from."""
    try:
        from skimage import data  # optional: bundled photographs, nothing downloaded

        photo = torch.from_numpy(data.astronaut()).float() / 255.0  # (512, 512, 3)
        side = min(photo.shape[0], photo.shape[1])
        photo = photo[:side, :side].permute(2, 0, 1)[None]
        return F.interpolate(photo, size=(size, size), mode="area")[0].permute(1, 2, 0), "skimage.data.astronaut"
    except ImportError:
        return procedural_image(size, generator), "procedural (1/f noise, shading, shapes)"


class MLP(nn.Module):
    """``(*, in_dim) -> (*, 3)``: ``layers`` ReLU layers of ``width``, sigmoid output."""

    def __init__(self, in_dim: int, width: int, layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [width] * (layers - 1)
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], 3), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (-10 * torch.log10(F.mse_loss(a, b))).item()


def fit(ctx: Context, label: str, mapping: str, sigma: float, image: torch.Tensor) -> dict[str, Any]:
    c = ctx.config
    size = image.shape[0]
    axis = torch.arange(size) / size
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij")[::-1], dim=-1)  # (size, size, 2): x, y
    even = torch.zeros(size, size, dtype=torch.bool)
    even[::2, ::2] = True
    ctx.manual_seed("init", label)
    if mapping == "none":
        encode: nn.Module = nn.Identity()
        in_dim = 2
    else:
        encode = FourierFeatures(2, mapping, num_features=c["mapping_size"], sigma=sigma, seed=ctx.seed)
        in_dim = encode.out_dim
    model = nn.Sequential(encode, MLP(in_dim, c["width"], c["layers"]))
    x_train, y_train = grid[even].to(ctx.device), image[even].to(ctx.device)

    def step_loss(m, step, generator, shard):
        return F.mse_loss(m(x_train[shard]), y_train[shard])

    ctx.train(label, model, step_loss, steps=c["steps"], lr=c["lr"], clip=None, log_every=10)
    with torch.no_grad():
        out = model(grid.to(ctx.device)).cpu()
    return {"train_psnr": psnr(out[even], image[even]), "test_psnr": psnr(out[~even], image[~even]), "_image": out}


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    image, source = load_image(c["size"], ctx.generator("image"))
    rows = [("none", "none", 1.0), ("basic", "basic", 1.0), ("positional", "positional", c["positional_max"])]
    rows += [(f"gaussian_{s:g}", "gaussian", s) for s in c["sigmas"]]
    per = {label: ctx.unit(label, lambda r=(label, m, s): fit(ctx, r[0], r[1], r[2], image)) for label, m, s in rows}
    gaussian = {k: v["test_psnr"] for k, v in per.items() if k.startswith("gaussian")}
    best = max(gaussian, key=gaussian.get)
    test = {k: v["test_psnr"] for k, v in per.items()}
    return {
        "image": source,
        "size": c["size"],
        "test_psnr": test,
        "train_psnr": {k: v["train_psnr"] for k, v in per.items()},
        "best_gaussian": best,
        "headline_name": "test PSNR (dB)",
        "headline": test,
        "_images": {"target": image, **{k: v["_image"] for k, v in per.items()}},
    }


def plot(result: dict[str, Any], fig, images) -> None:
    m = result["metrics"]
    if images:
        shown = ["target", "none", "basic", "positional", m["best_gaussian"]]
        axes = fig.subplots(1, len(shown) + 1)
        for ax, key in zip(axes, shown):
            ax.imshow(images[key].clamp(0, 1).numpy())
            ax.set_title(key if key == "target" else f"{key}\n{m['test_psnr'][key]:.2f} dB", fontsize=8)
            ax.axis("off")
        bar_panel(axes[-1], m["test_psnr"], title="test PSNR (dB)")
    else:
        bar_panel(fig.subplots(1, 1), m["test_psnr"], title="test PSNR (dB)")


EXPERIMENT = Experiment(
    name="fourier_image",
    claim="Fourier features let a coordinate MLP learn high frequencies: none < basic < positional <= Gaussian",
    paper="Tancik et al. 2020, arXiv:2006.10739 (Table 1, 2-D image regression, natural images)",
    section="4.1",
    quick={"size": 64, "width": 128, "layers": 4, "mapping_size": 64, "steps": 400, "lr": 2e-3, "positional_max": 8.0, "sigmas": [1.0, 2.0, 4.0, 8.0]},
    full={"size": 128, "width": 256, "layers": 4, "mapping_size": 256, "steps": 2000, "lr": 1e-3, "positional_max": 16.0, "sigmas": [1.0, 3.0, 10.0, 30.0]},
    reference={
        "natural_test_psnr_db": {"none": 19.32, "basic": 21.72, "positional": 24.95, "gaussian": 25.57},
        "note": "Tancik et al. 2020, Table 1 (natural images, 512 x 512, trained on every other pixel)",
    },
    run=run,
    plot=plot,
)
