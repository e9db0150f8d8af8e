"""Multiresolution hash encoding (Müller et al. 2022, "Instant Neural Graphics Primitives", arXiv:2201.05989).

Level ``l`` of ``L`` has resolution ``N_l = floor(N_min * b^l)`` with the growth factor
``b = exp((ln N_max - ln N_min) / (L - 1))`` (section 3, eq. 2-3). A point ``x`` in ``[0, 1]^d`` is
scaled to ``x N_l``; the ``2^d`` vertices of its cell, ``floor(x N_l)`` and ``floor(x N_l) + 1`` per
axis, index the level's table of ``F``-wide feature vectors, and the features are d-linearly
interpolated with the weights ``frac(x N_l)`` (eq. 4). A level whose dense grid of ``(N_l + 1)^d``
vertices fits in ``T = 2^log2_hashmap_size`` entries indexes it one to one (``sum_i c_i (N_l+1)^i``);
a finer level uses the paper's spatial hash (eq. 4)

    h(c) = (c_0 * 1  XOR  c_1 * 2654435761  XOR  c_2 * 805459861) mod T

whose low bits equal those of tiny-cuda-nn's uint32 arithmetic because ``T`` is a power of two.
Tables are initialised from ``U(-1e-4, 1e-4)`` (section 4). The output concatenates the levels,
coarsest first: ``(*, L F)``.

``convention="paper"`` (the default) follows the paper. ``convention="tcnn"`` follows tiny-cuda-nn's
``GridEncoding`` instead (include/tiny-cuda-nn/common_device.h and encodings/grid.h), which differs
in four ways, all reproduced by the PyTorch path:

* level placement: ``scale_l = 2^(l log2 s) N_min - 1`` in float32 (``s`` the per-level scale, here
  the paper's ``b``), ``res_l = ceil(scale_l) + 1`` vertices per axis (``N_min`` counts vertices, not
  cells), and the position ``x scale_l + 1/2``: levels are staggered by half a cell (the paper's
  appendix A), so no level's vertices line up with another's;
* dense levels index ``sum_i c_i res_l^i`` and wrap modulo their size (the half-cell offset can
  step one vertex past the grid; the paper's convention closes the last cell instead);
* level sizes are ``min(T, res_l^d rounded up to a multiple of 8)``, hashed when ``T < res_l^d``;
* the hash is the same (tiny-cuda-nn's ``CoherentPrime`` with primes 1, 2654435761, 805459861).

The table layout is tiny-cuda-nn's parameter layout: levels stacked coarsest first, ``F`` features
of an entry adjacent, so ``table.reshape(-1)`` is its ``params`` vector and the output's channel
``l F + f`` is its channel. ``backend="tcnn"`` (or ``"auto"``, when ``tinycudann`` imports, the input
is on CUDA and the configuration maps, see :func:`tcnn_encoding_config`) evaluates the same table
with tiny-cuda-nn's fused kernels; tiny-cuda-nn cannot place levels the paper's way, so the paper
convention always runs in PyTorch. Equality of the two paths holds to float32 rounding (tiny-cuda-nn
forms ``x scale + 1/2`` with one fused multiply-add).

All levels are computed in one batched pass (the corner indices of every level and point at once,
one gather, one weighted sum), so forward and backward have no Python loop over points or levels;
memory is linear in points times levels.

Coordinates outside ``[0, 1]`` are refused in eager mode; under ``torch.compile`` (where the check
would read the tensor on the host) they are clamped to the unit cube. Verified against the paper's
hash on hand-computed points and a per-level float64 transcription in
``tests/coordinate/test_hash_grid.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from posenc.coordinate.base import Encoding, check_unit_box
from posenc.core.base import DerivedTablesMixin
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_dtype,
    check_finite,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
)

#: The paper's hash primes; the first coordinate is multiplied by 1.
PRIMES = (1, 2654435761, 805459861)


def level_resolutions(num_levels: int, base_resolution: int, finest_resolution: int) -> list[int]:
    """``N_l = floor(N_min b^l)`` with the paper's geometric growth factor ``b``."""
    return scaled_level_resolutions(num_levels, base_resolution, growth_factor(num_levels, base_resolution, finest_resolution))


def growth_factor(num_levels: int, base_resolution: int, finest_resolution: int) -> float:
    """The paper's ``b = exp((ln N_max - ln N_min) / (L - 1))`` (1 for one level)."""
    check_positive_int("num_levels", num_levels)
    check_positive_int("base_resolution", base_resolution)
    check_positive_int("finest_resolution", finest_resolution)
    if finest_resolution < base_resolution:
        raise ValueError(
            f"`finest_resolution` must be >= base_resolution={base_resolution}, got {finest_resolution}"
        )
    if num_levels == 1:
        return 1.0
    return math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (num_levels - 1))


def scaled_level_resolutions(num_levels: int, base_resolution: int, per_level_scale: float) -> list[int]:
    """``N_l = floor(N_min b^l)`` for a given growth factor ``b`` (tiny-cuda-nn's ``per_level_scale``)."""
    return [_level_resolution(base_resolution, per_level_scale, level) for level in range(num_levels)]


def _level_resolution(base_resolution: int, per_level_scale: float, level: int) -> int:
    # a hair of slack so that N_min * b^(L-1) lands on N_max despite rounding
    return math.floor(base_resolution * per_level_scale**level * (1 + 1e-12))


def level_layout(resolutions: list[int], in_dim: int, log2_hashmap_size: int) -> tuple[list[int], list[bool]]:
    """Per level: table size ``min(T, (N_l + 1)^d)`` and whether the level is hashed."""
    table = 2**log2_hashmap_size
    dense = [(n + 1) ** in_dim for n in resolutions]
    return [min(table, v) for v in dense], [v > table for v in dense]


def axis_multipliers(resolutions: list[int], hashed: list[bool], in_dim: int) -> torch.Tensor:
    """``(L, d)`` int64: the hash primes on hashed levels, the dense strides ``(N_l + 1)^i`` elsewhere."""
    rows = [PRIMES[:in_dim] if h else tuple((n + 1) ** i for i in range(in_dim)) for n, h in zip(resolutions, hashed)]
    return torch.tensor(rows, dtype=torch.int64)


CONVENTIONS = ("paper", "tcnn")
BACKENDS = ("auto", "torch", "tcnn")


def tcnn_level_scales(num_levels: int, base_resolution: int, per_level_scale: float) -> list[float]:
    """tiny-cuda-nn's ``scale_l = exp2(l log2 s) N_min - 1``, in float32 as its ``grid_scale`` forms it."""
    check_positive_int("num_levels", num_levels)
    check_positive_int("base_resolution", base_resolution)
    s = torch.tensor(per_level_scale, dtype=torch.float32)
    levels = torch.arange(num_levels, dtype=torch.float32)
    return (torch.exp2(levels * torch.log2(s)) * base_resolution - 1).tolist()


def tcnn_level_layout(
    scales: list[float], in_dim: int, log2_hashmap_size: int
) -> tuple[list[int], list[int], list[bool]]:
    """tiny-cuda-nn's per-level vertices ``res_l = ceil(scale_l) + 1``, sizes and hashing.

    A level holds ``min(T, res_l^d rounded up to a multiple of 8)`` entries and is hashed when
    ``T < res_l^d``.
    """
    table = 2**log2_hashmap_size
    res = [math.ceil(v) + 1 for v in scales]
    sizes = [min(table, -(-(r**in_dim) // 8) * 8) for r in res]
    return res, sizes, [table < r**in_dim for r in res]


def tcnn_encoding_config(
    num_levels: int,
    features_per_level: int,
    log2_hashmap_size: int,
    base_resolution: int,
    per_level_scale: float,
) -> dict:
    """The ``encoding_config`` of a ``tinycudann.Encoding`` equal to ``HashGrid(convention="tcnn")``.

    Raises ValueError for what tiny-cuda-nn cannot build: ``features_per_level`` outside 1, 2, 4, 8
    or more than 128 levels.
    """
    check_positive_int("num_levels", num_levels)
    if features_per_level not in (1, 2, 4, 8):
        raise ValueError(f"`features_per_level` must be 1, 2, 4 or 8 for tiny-cuda-nn, got {features_per_level!r}")
    if num_levels > 128:
        raise ValueError(f"`num_levels` must be <= 128 for tiny-cuda-nn, got {num_levels}")
    return {
        "otype": "Grid",
        "type": "Hash",
        "hash": "CoherentPrime",
        "interpolation": "Linear",
        "n_levels": num_levels,
        "n_features_per_level": features_per_level,
        "log2_hashmap_size": log2_hashmap_size,
        "base_resolution": base_resolution,
        "per_level_scale": float(per_level_scale),
    }


def tinycudann_available() -> bool:
    """Whether the optional ``tinycudann`` package imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401  (optional: tiny-cuda-nn's PyTorch bindings)
    except ImportError:
        return False
    return True


def _corners(v: torch.Tensor, combine) -> torch.Tensor:
    """Combine per-axis values ``(..., d, 2)`` over all ``2^d`` corners: ``(..., 2^d)``."""
    out = v[..., 0, :]
    for axis in range(1, v.shape[-2]):
        # (..., k) op (..., 2) -> (..., k, 2) -> (..., 2k): one more axis of corners
        out = combine(out.unsqueeze(-1), v[..., axis, None, :]).flatten(-2)
    return out


def _index_tensor(name: str, value: torch.Tensor, ndim: int) -> torch.Tensor:
    """An integer tensor of rank ``ndim``, as int64 (sizes and indices cannot be fractional)."""
    value = check_tensor(name, value, ndim=ndim)
    if value.is_floating_point() or value.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got {value.dtype}")
    return value.long()


def _check_layout(
    table: torch.Tensor,
    resolutions: torch.Tensor,
    multipliers: torch.Tensor,
    num_dense: int,
    sizes: torch.Tensor,
    offsets: torch.Tensor,
    *,
    wrap: bool = False,
) -> None:
    """Every index the encoding can form must fall inside its level's rows of ``table`` (host read);
    ``wrap``: dense indices are taken modulo their level's size (tiny-cuda-nn's placement)."""
    if bool((resolutions < 1).any()):
        raise ValueError(f"`resolutions` must be >= 1, got {resolutions.tolist()}")
    if bool((sizes < 1).any()):
        raise ValueError(f"`sizes` must be >= 1, got {sizes.tolist()}")
    if bool((offsets < 0).any()):
        raise ValueError(f"`offsets` must be >= 0, got {offsets.tolist()}")
    if bool((multipliers < 0).any()):
        raise ValueError("`multipliers` must be >= 0 (hash primes or dense strides)")
    hashed = sizes[num_dense:]
    if hashed.numel():
        t = int(hashed[-1])
        if t & (t - 1) or bool((hashed != t).any()):
            raise ValueError(
                f"`sizes` of the hashed levels (from num_dense={num_dense}) must all be one power of two, "
                f"got {hashed.tolist()}"
            )
    # the largest dense index: the far corner, N_l along every axis
    top = (resolutions[:num_dense, None] * multipliers[:num_dense]).sum(-1)
    if not wrap and bool((top >= sizes[:num_dense]).any()):
        raise ValueError(
            f"`sizes` of the dense levels must exceed their largest index sum_i N_l * multipliers[l, i] "
            f"= {top.tolist()}, got {sizes[:num_dense].tolist()}"
        )
    end = int((offsets + sizes).max())
    if end > table.shape[0]:
        raise ValueError(
            f"`table` must have at least max(offsets + sizes) = {end} rows, got shape {tuple(table.shape)}"
        )


def hash_grid_encoding(
    x: torch.Tensor,
    table: torch.Tensor,
    resolutions: torch.Tensor,
    multipliers: torch.Tensor,
    num_dense: int,
    sizes: torch.Tensor,
    offsets: torch.Tensor,
    *,
    scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """Interpolated hash-grid features of ``x`` for every level at once.

    x: ``(*, d)`` float in ``[0, 1]`` (refused outside in eager mode, clamped under ``torch.compile``);
    table: ``(E, F)`` with every level's entries stacked;
    resolutions, sizes, offsets: ``(L,)`` int64 (``N_l``, level table size, first row of the level);
    multipliers: ``(L, d)`` int64 (:func:`axis_multipliers`); num_dense: how many levels (the first)
    are indexed densely, the others being hashed into ``sizes[-1]`` (a power of two) rows.
    scales: ``None`` for the paper's placement (position ``x N_l``, last cell closed), or ``(L,)``
    float ``scale_l`` for tiny-cuda-nn's (position ``x scale_l + 1/2``, dense indices modulo their
    level's size; :func:`tcnn_level_scales`). Returns ``(*, L F)`` in ``x``'s dtype. The layout (level sizes, offsets, dense indices within their
    level, every level within ``table``) is checked in eager mode off the meta device.
    """
    x = check_finite("x", check_float_tensor("x", x))
    table = check_float_tensor("table", table, ndim=2)
    resolutions = _index_tensor("resolutions", resolutions, 1)
    multipliers = _index_tensor("multipliers", multipliers, 2)
    sizes = _index_tensor("sizes", sizes, 1)
    offsets = _index_tensor("offsets", offsets, 1)
    check_same_device(x=x, table=table, resolutions=resolutions, multipliers=multipliers, sizes=sizes, offsets=offsets)
    levels, d = multipliers.shape
    if x.ndim == 0 or x.shape[-1] != d:
        raise ValueError(
            f"`x` must have last dimension d={d} to match `multipliers` of shape {(levels, d)}, "
            f"got shape {tuple(x.shape)}"
        )
    for name, value in (("resolutions", resolutions), ("sizes", sizes), ("offsets", offsets)):
        check_shape(name, value, (levels,), why=f"(one entry per level of `multipliers` {(levels, d)})")
    check_int("num_dense", num_dense, minimum=0, maximum=levels)
    if scales is not None:
        scales = check_finite("scales", check_float_tensor("scales", scales, ndim=1))
        check_shape("scales", scales, (levels,), why=f"(one entry per level of `multipliers` {(levels, d)})")
        check_same_device(x=x, scales=scales)
        if can_read_values(scales) and bool((scales < 0).any()):
            raise ValueError(f"`scales` must be >= 0 (cells per unit of x, less one), got {scales.tolist()}")
    x = check_unit_box("x", x)
    if can_read_values(table):
        _check_layout(table, resolutions, multipliers, num_dense, sizes, offsets, wrap=scales is not None)
    return _encode_levels(x, table, resolutions, multipliers, num_dense, sizes, offsets, scales)


def _encode_levels(
    x: torch.Tensor,
    table: torch.Tensor,
    resolutions: torch.Tensor,
    multipliers: torch.Tensor,
    num_dense: int,
    sizes: torch.Tensor,
    offsets: torch.Tensor,
    scales: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`hash_grid_encoding` without its checks: the layout and ``x`` as that function checks them
    (:class:`HashGrid` builds its layout valid and checks ``x`` itself, so its forward reads none of
    its own buffers on the host)."""
    batch, out_dtype = x.shape[:-1], x.dtype
    work = arithmetic_dtype(x.dtype)
    x = x.reshape(-1, 1, x.shape[-1]).to(work).clamp(0, 1)
    if scales is None:
        n = resolutions.to(work)
        # (p, 1, d) * (L, 1) -> (p, L, d): positions in grid units of every level
        pos = x * n[:, None]
        # the last cell is closed, so x = 1 interpolates inside it instead of stepping past the grid
        low = pos.floor().clamp(max=n[:, None] - 1)
    else:
        # tiny-cuda-nn: levels staggered by half a cell; the far corner may step one vertex past the grid
        pos = x * scales.to(work)[:, None] + 0.5
        low = pos.floor()
    frac = pos - low
    low = low.long()
    # (p, L, d, 2): vertex coordinates c, c + 1 per axis, times the level's per-axis multiplier
    c = torch.stack((low, low + 1), dim=-1) * multipliers[:, :, None]
    w = torch.stack((1 - frac, frac), dim=-1)
    # dense levels come first (resolutions grow); the rest hash into tables of T = sizes[-1] rows
    dense_idx = _corners(c[:, :num_dense], torch.add)
    if scales is not None:
        dense_idx = dense_idx % sizes[:num_dense, None]
    hashed_idx = _corners(c[:, num_dense:], torch.bitwise_xor) & (sizes[-1] - 1)
    # (p, L, 2^d): rows of the stacked table
    idx = torch.cat((dense_idx, hashed_idx), dim=1) + offsets[:, None]
    weights = _corners(w, torch.mul)
    # one gather and weighted sum over the 2^d corners of every (point, level) pair
    # (p L, 2^d) rows and weights -> (p L, F): gather and interpolate every (point, level) pair at once
    feats = _Interpolate.apply(table, idx.flatten(0, 1), weights.flatten(0, 1).to(table.dtype))
    return feats.reshape(*batch, multipliers.shape[0] * table.shape[-1]).to(out_dtype)


class _Interpolate(torch.autograd.Function):
    """``out[r] = sum_k weights[r, k] table[idx[r, k]]`` with a sort-free backward.

    The forward is ``embedding_bag``; its own backward sorts the indices, which on CPU costs more
    than the whole forward, so the table's gradient is one ``index_add`` instead.
    """

    @staticmethod
    def forward(table: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        table, idx, weights = inputs
        ctx.save_for_backward(table, idx, weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, idx, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            # (r, k, 1) * (r, 1, F) -> (r k, F) added into the rows idx
            contrib = (weights.unsqueeze(-1) * grad.unsqueeze(-2)).flatten(0, 1)
            grad_table = torch.zeros_like(table).index_add_(0, idx.flatten(), contrib)
        if ctx.needs_input_grad[2]:
            # (r, k, F) . (r, 1, F) -> (r, k)
            grad_weights = (table.index_select(0, idx.flatten()).view(*idx.shape, -1) * grad.unsqueeze(-2)).sum(-1)
        return grad_table, None, grad_weights


@register(
    "hash_grid",
    paper="Müller et al. 2022, arXiv:2201.05989",
    summary="Learned feature tables at L geometric resolutions, spatially hashed when finer than 2^T, d-linearly interpolated.",
)
class HashGrid(DerivedTablesMixin, Encoding):
    """Multiresolution hash encoding of points in ``[0, 1]^in_dim`` (``in_dim`` 2 or 3).

    Args:
        in_dim: number of coordinates ``d`` (2 or 3).
        num_levels: ``L`` (16 in the paper).
        features_per_level: ``F`` (2 in the paper).
        log2_hashmap_size: ``log2 T``, table entries per level (14 to 24 in the paper).
        base_resolution: ``N_min`` (16 in the paper).
        finest_resolution: ``N_max`` (512 to 524288 in the paper; 512 when neither it nor
            ``per_level_scale`` is given); with ``L`` it fixes the per-level scale ``b``
            (:attr:`per_level_scale`).
        per_level_scale: ``b`` itself (>= 1), instead of ``finest_resolution``, as tiny-cuda-nn's
            configs give it (e.g. 1.5 or 2.0); ``N_max`` is then ``floor(N_min b^(L-1))``.
        convention: ``"paper"`` (levels ``floor(N_min b^l)`` cells, no offset) or ``"tcnn"``
            (tiny-cuda-nn's placement, level sizes and wrap; see the module docstring). With ``"tcnn"``
            :attr:`resolutions` holds vertices per axis, ``ceil(scale_l) + 1``.
        backend: ``"torch"`` (the PyTorch path), ``"tcnn"`` (tiny-cuda-nn's kernels on the same table:
            needs ``convention="tcnn"``, the ``tinycudann`` package, a CUDA device and a float32 table)
            or ``"auto"``: tiny-cuda-nn when all of that holds and the input is on CUDA, else PyTorch.
    """

    def __init__(
        self,
        in_dim: int = 3,
        num_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int | None = None,
        *,
        per_level_scale: float | None = None,
        convention: str = "paper",
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_dim)
        if convention not in CONVENTIONS:
            raise ValueError(f"`convention` must be one of {CONVENTIONS}, got {convention!r}")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
        if in_dim not in (2, 3):
            raise ValueError(f"`in_dim` must be 2 or 3 (the paper's hash has three primes), got {in_dim}")
        self.num_levels = check_positive_int("num_levels", num_levels)
        self.features_per_level = check_positive_int("features_per_level", features_per_level)
        self.log2_hashmap_size = check_int("log2_hashmap_size", log2_hashmap_size, minimum=1, maximum=30)
        self.base_resolution = check_positive_int("base_resolution", base_resolution)
        if per_level_scale is not None and finest_resolution is not None:
            raise ValueError(
                "give `finest_resolution` or `per_level_scale`, not both: each fixes the growth factor b "
                f"(got finest_resolution={finest_resolution!r}, per_level_scale={per_level_scale!r})"
            )
        if per_level_scale is not None:
            scale = check_float("per_level_scale", per_level_scale, minimum=1.0)
            # N_min b^(L-1) must stay within int64 hashing (checked in logarithms: b^l may overflow a float)
            if math.log(base_resolution) + (num_levels - 1) * math.log(scale) >= math.log(2**62 // PRIMES[1]):
                raise ValueError(
                    f"`per_level_scale`={per_level_scale!r} with num_levels={num_levels} and base_resolution="
                    f"{base_resolution} makes the finest level reach {2**62 // PRIMES[1]} cells (int64 hashing); "
                    "lower one of them"
                )
            finest_resolution = _level_resolution(base_resolution, scale, num_levels - 1)
        elif finest_resolution is None and base_resolution > 512:
            raise ValueError(
                f"`base_resolution`={base_resolution} is above the default finest_resolution=512: give "
                "`finest_resolution` (>= base_resolution) or `per_level_scale` with it"
            )
        self.finest_resolution = check_positive_int(
            "finest_resolution", 512 if finest_resolution is None else finest_resolution
        )
        self.convention, self.backend = convention, backend
        table_dtype = dtype or torch.get_default_dtype()
        # every level holds at least min(T, 2^d) rows: refuse a level count no table could hold before
        # the per-level lists are built (a Python loop over num_levels)
        smallest = (num_levels * min(2**log2_hashmap_size, 2**in_dim), features_per_level)
        larger = "features_per_level" if features_per_level > smallest[0] else "num_levels"
        check_fits(larger, getattr(self, larger), smallest, table_dtype, device)
        #: the growth factor b of eq. 3, tiny-cuda-nn's ``per_level_scale``
        self.per_level_scale = (
            float(per_level_scale) if per_level_scale is not None
            else growth_factor(num_levels, base_resolution, self.finest_resolution)
        )
        self.resolutions = scaled_level_resolutions(num_levels, base_resolution, self.per_level_scale)
        if convention == "tcnn":
            self.level_scales = tcnn_level_scales(num_levels, base_resolution, self.per_level_scale)
            self.resolutions, self.level_sizes, self.level_hashed = tcnn_level_layout(
                self.level_scales, in_dim, log2_hashmap_size
            )
        else:
            self.level_scales = None
            self.level_sizes, self.level_hashed = level_layout(self.resolutions, in_dim, log2_hashmap_size)
        if (self.resolutions[-1] + 1) * PRIMES[1] >= 2**62:
            raise ValueError(f"`finest_resolution` must be below {2**62 // PRIMES[1]} (int64 hashing), got {self.finest_resolution}")
        if backend == "tcnn":
            self.tcnn_config()  # refuses what tiny-cuda-nn cannot build, by argument
            if convention != "tcnn":
                raise ValueError(
                    "`backend`='tcnn' needs convention='tcnn': tiny-cuda-nn staggers the levels by half a cell "
                    "and cannot place them the paper's way"
                )
            if not tinycudann_available():
                raise ValueError(
                    "`backend`='tcnn' needs the optional `tinycudann` package and a CUDA device; neither is "
                    "usable here (use backend='auto' or 'torch', which run on CPU)"
                )
        self._tcnn_modules: dict[torch.device, nn.Module] = {}  # built on first use, one per device
        rows = sum(self.level_sizes)
        larger = "features_per_level" if features_per_level > rows else "log2_hashmap_size"
        check_fits(larger, getattr(self, larger), (rows, features_per_level), table_dtype, device)
        factory = {"device": device, "dtype": check_dtype("dtype", dtype)}
        self.table = nn.Parameter(torch.empty(sum(self.level_sizes), features_per_level, **factory))
        self.num_dense_levels = self.level_hashed.count(False)
        for name in ("level_resolution", "level_size", "level_offset", "level_multiplier", "level_scale"):
            self.register_buffer(name, None, persistent=False)
        self.init_non_persistent_buffers(self.table.device)
        if self.table.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation, ``U(-1e-4, 1e-4)``."""
        nn.init.uniform_(self.table, -1e-4, 1e-4)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        offsets = [0]
        for size in self.level_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.level_resolution = torch.tensor(self.resolutions, dtype=torch.int64, device=device)
        self.level_size = torch.tensor(self.level_sizes, dtype=torch.int64, device=device)
        self.level_offset = torch.tensor(offsets, dtype=torch.int64, device=device)
        if self.convention == "tcnn":
            # dense strides res_l^i (tiny-cuda-nn's res_l counts vertices), primes on hashed levels
            cells = [r - 1 for r in self.resolutions]
            self.level_multiplier = axis_multipliers(cells, self.level_hashed, self.in_dim).to(device)
            self.level_scale = torch.tensor(self.level_scales, dtype=torch.float32, device=device)
        else:
            self.level_multiplier = axis_multipliers(self.resolutions, self.level_hashed, self.in_dim).to(device)
            self.level_scale = None

    def tcnn_config(self) -> dict:
        """The ``encoding_config`` of the equal ``tinycudann.Encoding`` (:func:`tcnn_encoding_config`)."""
        return tcnn_encoding_config(
            self.num_levels, self.features_per_level, self.log2_hashmap_size, self.base_resolution,
            self.per_level_scale,
        )

    def uses_tcnn(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` evaluates ``x`` with tiny-cuda-nn."""
        if self.backend == "torch" or self.convention != "tcnn" or not x.is_cuda or not x.numel():
            return False
        if self.backend == "tcnn":
            return True
        return (
            self.table.dtype == torch.float32
            and self.features_per_level in (1, 2, 4, 8)
            and self.num_levels <= 128
            and not torch.compiler.is_compiling()
            and tinycudann_available()
        )

    def _tcnn_forward(self, x: torch.Tensor) -> torch.Tensor:
        """tiny-cuda-nn's kernels on this module's table (its flat ``params``), gradients to ``table``."""
        import tinycudann  # optional, checked by uses_tcnn / the constructor

        if self.table.dtype != torch.float32:
            raise ValueError(f"`backend`='tcnn' needs a float32 table, got {self.table.dtype}")
        module = self._tcnn_modules.get(x.device)
        if module is None:
            with torch.cuda.device(x.device):
                module = tinycudann.Encoding(self.in_dim, self.tcnn_config(), dtype=torch.float32)
            if module.params.numel() != self.table.numel():
                raise RuntimeError(
                    f"tiny-cuda-nn laid out {module.params.numel()} parameters for {self.tcnn_config()}, "
                    f"posenc's tcnn convention {self.table.numel()}: the layouts disagree"
                )
            self._tcnn_modules[x.device] = module
        flat = x.reshape(-1, self.in_dim).float()
        out = torch.func.functional_call(module, {"params": self.table.reshape(-1)}, (flat,))
        return out.reshape(*x.shape[:-1], self.out_dim).to(x.dtype)

    @property
    def out_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(*, in_dim)`` in ``[0, 1]`` -> ``(*, out_dim)`` in ``x``'s dtype."""
        x = check_unit_box("x", self.check_input(x))
        if self.backend == "tcnn" and not x.is_cuda and x.device.type != "meta":
            raise ValueError(f"`x` must be on a CUDA device for backend='tcnn', got {x.device}")
        if self.uses_tcnn(x):
            check_same_device(x=x, table=self.table)
            return self._tcnn_forward(x)
        check_same_device(x=x, table=self.table)
        # the layout is valid by construction: the unchecked core reads none of the buffers on the host
        return _encode_levels(
            x, self.table, self.level_resolution, self.level_multiplier, self.num_dense_levels, self.level_size,
            self.level_offset, self.level_scale,
        )

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, num_levels={self.num_levels}, features_per_level={self.features_per_level}, "
            f"log2_hashmap_size={self.log2_hashmap_size}, resolutions={self.resolutions[0]}..{self.resolutions[-1]}, "
            f"convention={self.convention!r}, backend={self.backend!r}"
        )



def level_collision_rates(grid: HashGrid, max_vertices: int = 2**21) -> list[float | None]:
    """Per level, the fraction of its grid vertices whose table slot another vertex also uses.

    Every vertex an input in ``[0, 1]^d`` can reach is indexed as :meth:`HashGrid.forward` indexes it
    (``0 .. N_l`` per axis in the paper's convention, ``0 .. floor(scale_l + 1/2) + 1`` in
    tiny-cuda-nn's); a dense level of the paper's convention gives 0, a hashed level about the
    uniform-hashing ``1 - (1 - 1/T)^(V - 1)`` for ``V`` vertices. ``None`` for a level of more than
    ``max_vertices`` vertices (not enumerated).
    """
    check_positive_int("max_vertices", max_vertices)
    rates: list[float | None] = []
    table = 2**grid.log2_hashmap_size
    multipliers = grid.level_multiplier.cpu()
    for level in range(grid.num_levels):
        if grid.convention == "tcnn":
            side = math.floor(grid.level_scales[level] + 0.5) + 2
        else:
            side = grid.resolutions[level] + 1
        if side**grid.in_dim > max_vertices:
            rates.append(None)
            continue
        axis = torch.arange(side, dtype=torch.int64)
        # (V, d) every reachable vertex, times the level's per-axis multipliers
        c = torch.cartesian_prod(*[axis] * grid.in_dim).reshape(-1, grid.in_dim) * multipliers[level]
        if grid.level_hashed[level]:
            slot = c[:, 0]
            for i in range(1, grid.in_dim):
                slot = slot ^ c[:, i]
            slot = slot & (table - 1)
        else:
            slot = c.sum(-1) % grid.level_sizes[level]
        counts = torch.bincount(slot, minlength=grid.level_sizes[level])
        rates.append(float((counts[slot] > 1).double().mean()))
    return rates
