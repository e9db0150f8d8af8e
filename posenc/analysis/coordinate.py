"""The atlas's figures of the coordinate family: each encoding's response over a 2-D slice of its
input domain and, for the hash grid, the collision rate of its spatial hash per level.

The slice is a 48 x 48 image: the first two coordinates over the encoding's domain (``[0, 1]`` for
the grid encodings, which refuse anything else, ``[-1, 1]`` otherwise) with the others at the
domain's middle; the sphere by azimuth and polar angle for spherical harmonics; the mean over the
plane at the example's covariance for the integrated encoding. Four output channels spread over
``out_dim`` are drawn (for level-ordered encodings, coarse to fine). The modules are the examples
of :mod:`posenc.testing.examples`, as everywhere in the atlas.
"""

from __future__ import annotations

import math

import torch

from posenc.analysis.figures import Pictures, heatmap, lines
from posenc.coordinate import HashGrid, IntegratedPE, SphericalHarmonics
from posenc.coordinate.hash_grid import level_collision_rates

#: Pixels per side of the slice images.
SIDE = 48
#: The hash grid whose collision rates are drawn beside the example's: 3-D, 16 levels from 4 to 64,
#: a 2^14 table (its finest level has 65^3 = 274,625 vertices, enumerated in well under a second).
COLLISION_CONFIG = {"in_dim": 3, "num_levels": 16, "features_per_level": 2, "log2_hashmap_size": 14,
                    "base_resolution": 4, "finest_resolution": 64}


def _plane(lo: float, hi: float, in_dim: int) -> torch.Tensor:
    """``(SIDE, SIDE, in_dim)``: coordinates 0 and 1 over ``[lo, hi]`` (x across, y down), the rest mid."""
    axis = torch.linspace(lo, hi, SIDE)
    x = torch.full((SIDE, SIDE, in_dim), (lo + hi) / 2)
    x[..., 0] = axis[None, :]
    x[..., 1] = axis[:, None]
    return x


@torch.no_grad()
def slice_response(module: torch.nn.Module, example: tuple) -> tuple[torch.Tensor, str, str, str]:
    """``(SIDE, SIDE, out_dim)`` response over a 2-D slice, with its description and axis labels."""
    if isinstance(module, SphericalHarmonics):
        phi = torch.linspace(0, 2 * math.pi, SIDE)[None, :]
        theta = torch.linspace(0, math.pi, SIDE)[:, None]
        d = torch.stack(torch.broadcast_tensors(theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()), -1)
        return module(d), "the unit sphere (azimuth across, polar angle down)", "azimuth", "polar angle"
    if isinstance(module, IntegratedPE):
        mean = _plane(-1.0, 1.0, module.in_dim)
        cov = example[1].reshape(-1, module.in_dim).mean(0)
        out = module(mean, cov.expand_as(mean))
        return out, "means in the plane [-1, 1]^2 (others 0) at the example's covariance diagonal", "x", "y"
    try:
        return module(_plane(-1.0, 1.0, module.in_dim)), "coordinates 0 and 1 over [-1, 1] (others 0)", "x", "y"
    except ValueError:  # a grid encoding's declared domain is the unit box
        return module(_plane(0.0, 1.0, module.in_dim)), "coordinates 0 and 1 over [0, 1] (others 1/2)", "x", "y"


def _channel_name(module: torch.nn.Module, c: int) -> str:
    if isinstance(module, HashGrid):
        return f"level {c // module.features_per_level}, feature {c % module.features_per_level}"
    if isinstance(module, SphericalHarmonics):
        band = math.isqrt(c)
        return f"channel {c}: l = {band}, m = {c - band * band - band}"
    return f"channel {c}"


@torch.no_grad()
def coordinate_pictures(name: str, module: torch.nn.Module, example: tuple, entry: dict, pics: Pictures,
                        stem: str) -> None:
    """Add the slice figure (and for a hash grid the collision figure) of one coordinate encoding."""
    out, where, xlabel, ylabel = slice_response(module, example)
    width = out.shape[-1]
    channels = sorted({round(k * (width - 1) / 3) for k in range(4)})
    fig, axes = pics.figure(len(channels), height=3.2)
    for ax, c in zip(axes, channels):
        heatmap(ax, out[..., c], _channel_name(module, c), xlabel, ylabel)
    entry["pictures"].append(pics.save(
        fig, f"{stem}-slice.png", f"the response of {len(channels)} of its {width} output channels over {where}"
        + (" (tables at their random initialisation)" if any(p.requires_grad for p in module.parameters()) else "")))
    entry["data"]["slice"] = where
    if isinstance(module, HashGrid):
        _collision_picture(module, entry, pics, stem)


def _collision_picture(example: HashGrid, entry: dict, pics: Pictures, stem: str) -> None:
    grids = [("its example", example), ("3-D, L = 16, N 4..64, T = 2^14", HashGrid(**COLLISION_CONFIG))]
    fig, axes = pics.figure(len(grids), height=3.4)
    entry["data"]["collision_rates"] = {}
    for ax, (label, grid) in zip(axes, grids):
        rates = level_collision_rates(grid)
        t = 2**grid.log2_hashmap_size
        vertices = [(n + 1) ** grid.in_dim for n in grid.resolutions]
        uniform = [1 - (1 - 1 / t) ** (v - 1) if h else 0.0 for v, h in zip(vertices, grid.level_hashed)]
        levels = list(range(grid.num_levels))
        lines(ax, levels, [("measured", [float("nan") if r is None else r for r in rates]),
                           ("uniform hash", uniform)],
              xlabel="level (coarse to fine)", ylabel="vertices sharing a slot", title=label)
        ax.set_ylim(-0.03, 1.03)
        entry["data"]["collision_rates"][label] = rates
    entry["pictures"].append(pics.save(
        fig, f"{stem}-collisions.png", "the fraction of each level's grid vertices whose table slot another vertex "
        "also uses, from the paper's hash (dense levels: 0), beside the rate of a uniformly random hash"))
