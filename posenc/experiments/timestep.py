"""``timestep``: step embeddings for an iterative network (survey 4.2; Ho et al. 2020, Chen et al. 2020).

A small DDPM on a 2-D mixture of eight Gaussians on a ring: an MLP predicts the noise from the
noisy point and a step input that is one of

* ``none``: no step input (the network must guess the noise level from the point alone);
* ``raw``: the step ``t / T`` as one number;
* ``timestep``: DDPM's sinusoidal embedding and its dense-swish-dense layers
  (posenc's :class:`~posenc.step.timestep.TimestepEmbedding`);
* ``noise_level``: WaveGrad's sinusoid of ``5000 * sqrt(alpha_bar_t)``, the continuous noise level
  (posenc's :class:`~posenc.step.noise_level.NoiseLevelEmbedding`), then a dense layer.

Measured: held-out noise-prediction error (mean over uniformly drawn steps) and a sample-quality
distance, the sliced Wasserstein-1 distance between ancestral samples and fresh data. At this scale
the form of the embedding may matter little beyond having one; the result says which.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posenc.experiments.harness import Context, Experiment
from posenc.experiments.plotting import bar_panel
from posenc.step.noise_level import NoiseLevelEmbedding
from posenc.step.timestep import TimestepEmbedding

VARIANTS = ("none", "raw", "timestep", "noise_level")


def ring(n: int, generator: torch.Generator, *, modes: int = 8, radius: float = 1.0, std: float = 0.08) -> torch.Tensor:
    """``(n, 2)`` samples of ``modes`` Gaussians evenly spaced on a circle."""
    k = torch.randint(0, modes, (n,), generator=generator).float()
    angle = 2 * math.pi * k / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + std * torch.randn(n, 2, generator=generator)


def schedule(steps: int) -> torch.Tensor:
    """Cumulative ``alpha_bar_t`` for t = 1..T, ``(T + 1,)`` with ``alpha_bar_0 = 1`` (cosine schedule)."""
    s = 0.008
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0]).clamp(1e-5, 1.0).float()


class Denoiser(nn.Module):
    """``(b, 2), (b,) steps -> (b, 2)`` predicted noise."""

    def __init__(self, variant: str, hidden: int, emb_dim: int, steps: int, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.variant, self.steps = variant, steps
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)
        if variant == "timestep":
            self.embed: nn.Module | None = TimestepEmbedding(emb_dim, hidden)
            extra = hidden
        elif variant == "noise_level":
            self.embed = nn.Sequential(NoiseLevelEmbedding(emb_dim), nn.Linear(emb_dim, hidden), nn.SiLU())
            extra = hidden
        else:
            self.embed = None
            extra = 1 if variant == "raw" else 0
        self.net = nn.Sequential(
            nn.Linear(2 + extra, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.variant == "none":
            h = x
        elif self.variant == "raw":
            h = torch.cat([x, (t.float() / self.steps).unsqueeze(-1)], dim=-1)
        elif self.variant == "timestep":
            h = torch.cat([x, self.embed(t)], dim=-1)
        else:
            h = torch.cat([x, self.embed(self.alpha_bar[t].sqrt())], dim=-1)
        return self.net(h)


@torch.no_grad()
def sample(model: Denoiser, n: int, generator: torch.Generator) -> torch.Tensor:
    """DDPM ancestral sampling from ``x_T ~ N(0, I)``: ``(n, 2)``."""
    ab = model.alpha_bar.cpu()
    x = torch.randn(n, 2, generator=generator)
    for t in range(model.steps, 0, -1):
        alpha = ab[t] / ab[t - 1]
        device = model.alpha_bar.device
        eps = model(x.to(device), torch.full((n,), t, device=device)).cpu()
        x = (x - (1 - alpha) / (1 - ab[t]).sqrt() * eps) / alpha.sqrt()
        if t > 1:
            sigma = ((1 - ab[t - 1]) / (1 - ab[t]) * (1 - alpha)).sqrt()
            x = x + sigma * torch.randn(n, 2, generator=generator)
    return x


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, projections: int = 128) -> float:
    """Mean over random directions of the 1-D Wasserstein-1 distance between projections (equal sizes)."""
    theta = torch.rand(projections, generator=generator) * math.pi
    dirs = torch.stack([theta.cos(), theta.sin()], dim=1)  # (p, 2)
    pa, _ = (a @ dirs.T).sort(dim=0)
    pb, _ = (b @ dirs.T).sort(dim=0)
    return (pa - pb).abs().mean().item()


def train_variant(ctx: Context, variant: str) -> dict[str, Any]:
    c = ctx.config
    T = c["steps_T"]
    alpha_bar = schedule(T)
    ctx.manual_seed("init", variant)
    model = Denoiser(variant, c["hidden"], c["emb_dim"], T, alpha_bar)

    def noisy(batch: int, generator: torch.Generator):
        x0 = ring(batch, generator)
        t = torch.randint(1, T + 1, (batch,), generator=generator)
        eps = torch.randn(batch, 2, generator=generator)
        ab = alpha_bar[t].unsqueeze(-1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, eps

    def step_loss(m, step, generator, shard):
        xt, t, eps = noisy(c["batch"], generator)
        return F.mse_loss(m(xt[shard].to(ctx.device), t[shard].to(ctx.device)), eps[shard].to(ctx.device))

    ctx.train(variant, model, step_loss, steps=c["train_steps"], lr=c["lr"], log_every=10, schedule="cosine")
    xt, t, eps = noisy(c["eval_points"], ctx.generator("eval"))
    with torch.no_grad():
        error = F.mse_loss(model(xt.to(ctx.device), t.to(ctx.device)).cpu(), eps).item()
    samples = sample(model, c["eval_points"], ctx.generator("sample"))
    data = ring(c["eval_points"], ctx.generator("data"))
    return {
        "noise_mse": error,
        "sliced_w1": sliced_wasserstein(samples, data, ctx.generator("projections")),
        "_samples": samples,
    }


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    if c["emb_dim"] < 4:  # DDPM's embedding divides its exponent by emb_dim // 2 - 1
        raise ValueError(f"`emb_dim` must be at least 4 (DDPM's step embedding needs two frequencies), got {c['emb_dim']}")
    per = {v: ctx.unit(v, lambda v=v: train_variant(ctx, v)) for v in VARIANTS}
    floor = sliced_wasserstein(ring(c["eval_points"], ctx.generator("data")), ring(c["eval_points"], ctx.generator("data2")), ctx.generator("projections"))
    return {
        "noise_mse": {k: v["noise_mse"] for k, v in per.items()},
        "sliced_w1": {k: v["sliced_w1"] for k, v in per.items()},
        "sliced_w1_between_two_data_samples": floor,
        "headline_name": "sliced W1 of samples (lower is better)",
        "headline": {k: v["sliced_w1"] for k, v in per.items()},
        "_images": {k: v["_samples"] for k, v in per.items()} | {"data": ring(c["eval_points"], ctx.generator("data"))},
    }


def plot(result: dict[str, Any], fig, images) -> None:
    m = result["metrics"]
    keys = ["data", *VARIANTS] if images else []
    axes = fig.subplots(1, len(keys) + 2)
    for ax, key in zip(axes, keys):
        pts = images[key]
        ax.scatter(pts[:, 0], pts[:, 1], s=1)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
        ax.set_title(key if key == "data" else f"{key}\nSW1 {m['sliced_w1'][key]:.3f}", fontsize=8)
    bar_panel(axes[-2], m["noise_mse"], title="noise-prediction MSE")
    bar_panel(axes[-1], m["sliced_w1"], title="sliced W1", reference=m["sliced_w1_between_two_data_samples"])


EXPERIMENT = Experiment(
    name="timestep",
    claim="an iterative (diffusion) network needs its step as input; how much the embedding's form matters is measured",
    paper="Ho et al. 2020, arXiv:2006.11239; Chen et al. 2020, arXiv:2009.00713",
    section="4.2",
    quick={"steps_T": 50, "hidden": 128, "emb_dim": 32, "batch": 256, "train_steps": 2000, "lr": 3e-3, "eval_points": 1000},
    full={"steps_T": 1000, "hidden": 256, "emb_dim": 128, "batch": 512, "train_steps": 4000, "lr": 2e-3, "eval_points": 5000},
    reference={
        "note": "no paper reports this toy; DDPM (CIFAR-10 FID 3.17) and WaveGrad use the sinusoidal step / "
        "noise-level embeddings as their standard inputs, without an ablation of the embedding's form",
    },
    run=run,
    plot=plot,
)
