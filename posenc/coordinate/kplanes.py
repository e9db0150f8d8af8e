"""K-planes (Fridovich-Keil et al. 2023, arXiv:2301.10241) and the triplane they generalise.

A point of ``d`` coordinates is projected onto the ``d (d - 1) / 2`` axis-aligned planes of its
coordinate pairs (3 for space, 6 for space-time); each plane is a learned ``F``-channel grid,
bilinearly interpolated at the projection. K-planes multiply the plane features elementwise
(Hadamard product, eq. 2), at several spatial scales whose results are concatenated (eq. 3):

    f(q) = concat_s  prod_{(i, j)} interp(P^s_{ij}, (q_i, q_j))      -> (*, F S)

The time axis of a 4-D input keeps one resolution at every scale, and planes touching time start at
1 so that a field starts static (section 3.2; spatial planes start ``U(0.1, 0.5)``). A triplane
(EG3D, Chan et al. 2022, arXiv:2112.07945) is the 3-D case at one scale, its three features summed
(``combine="sum"``, EG3D) or kept side by side (``"concat"``).

Coordinates lie in ``[0, 1]^d`` (refused outside in eager mode, clamped under ``torch.compile``).
Interpolation is ``grid_sample`` with ``align_corners=True`` (a gather of the same corners under
``torch.compile``): grid vertex ``k`` of ``R`` sits at ``k / (R - 1)``. Verified against a float64
per-point bilinear transcription in ``tests/coordinate/test_kplanes.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from posenc.coordinate.base import Encoding, check_unit_box
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_dtype,
    check_finite,
    check_fits,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_same_device,
)

Combine = Literal["product", "sum", "concat"]


def plane_pairs(in_dim: int) -> list[tuple[int, int]]:
    """The coordinate pairs ``(i, j)``, ``i < j``, in lexicographic order."""
    return list(itertools.combinations(range(in_dim), 2))


def sample_plane(plane: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear features of ``plane`` ``(F, R_j, R_i)`` at ``uv`` ``(p, 2)`` in ``[0, 1]``: ``(p, F)``.

    ``u`` runs along the last axis (``R_i``), ``v`` along the middle one; vertex ``k`` sits at
    ``k / (R - 1)`` (``grid_sample``'s ``align_corners=True``). Eager code calls ``grid_sample``;
    traced code calls :func:`gather_bilinear`, the same interpolation, because inductor's lowering of
    ``grid_sample`` took about 8 s per plane to compile on CPU (100 s for a 12-plane K-planes field,
    against 33 s). Half-precision planes go through :func:`gather_bilinear` too: ``grid_sample``
    places the sample in the planes' dtype, where fp16 and bf16 cannot hold a vertex coordinate
    (bf16 is off by a quarter cell at 64 vertices, and fp16 read outside 512-vertex planes on CPU)."""
    if torch.compiler.is_compiling() or plane.dtype in (torch.float16, torch.bfloat16):
        return gather_bilinear(plane, uv)
    # (p, 2) in [0, 1] -> (1, 1, p, 2) in [-1, 1], grid_sample's (x = width = i, y = height = j)
    grid = (uv * 2 - 1).to(plane.dtype)[None, None]
    out = F.grid_sample(plane[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    # (1, F, 1, p) -> (p, F)
    return out[0, :, 0].T


def gather_bilinear(plane: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """:func:`sample_plane` as one gather of the four corners and their weights (in float32 or the
    planes' dtype if wider, as ``grid_sample`` for float32 and float64 planes): plane ``(F, R_j, R_i)``
    with ``R >= 2``, uv ``(p, 2)`` in ``[0, 1]`` -> ``(p, F)`` in the planes' dtype."""
    channels, rj, ri = plane.shape
    work = arithmetic_dtype(plane.dtype)
    uv = uv.to(work)
    # (p,) fractional vertex coordinates; the lower corner stops one vertex short of the far edge
    u, v = uv[:, 0] * (ri - 1), uv[:, 1] * (rj - 1)
    i0, j0 = u.floor().clamp(0, ri - 2), v.floor().clamp(0, rj - 2)
    fu, fv = u - i0, v - j0
    low = j0.long() * ri + i0.long()
    # (4, p): corners (j0, i0), (j0, i0 + 1), (j0 + 1, i0), (j0 + 1, i0 + 1) and their weights
    corners = torch.stack((low, low + 1, low + ri, low + ri + 1))
    weights = torch.stack(((1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv))
    # (R_j R_i, F) rows of vertex features gathered at the 4 p corners -> (4, p, F), weighted, summed
    vertices = plane.reshape(channels, rj * ri).T.contiguous()
    values = vertices.index_select(0, corners.reshape(-1)).view(4, -1, channels)
    return (values.to(work) * weights.unsqueeze(-1)).sum(0).to(plane.dtype)


def _check_planes(planes: Sequence[Sequence[torch.Tensor]], num_pairs: int, x: torch.Tensor) -> None:
    """``planes``: a non-empty list of scales, each ``num_pairs`` float ``(F, R_j, R_i)`` grids sharing ``F``,
    one dtype and ``x``'s device."""
    if isinstance(planes, torch.Tensor) or not isinstance(planes, Sequence) or not planes:
        raise ValueError(
            f"`planes` must be a non-empty list of scales, each a list of {num_pairs} planes, "
            f"got {type(planes).__name__}"
        )
    first = None
    for s, scale in enumerate(planes):
        if isinstance(scale, torch.Tensor) or not isinstance(scale, Sequence) or len(scale) != num_pairs:
            listed = isinstance(scale, Sequence) and not isinstance(scale, torch.Tensor)
            got = len(scale) if listed else type(scale).__name__
            raise ValueError(
                f"`x` of shape {tuple(x.shape)} needs {num_pairs} planes per scale, one per coordinate pair; "
                f"`planes[{s}]` holds {got}"
            )
        for k, plane in enumerate(scale):
            name = f"planes[{s}][{k}]"
            check_float_tensor(name, plane, ndim=3)
            first = plane if first is None else first
            if plane.shape[0] != first.shape[0] or plane.dtype != first.dtype:
                raise ValueError(
                    f"`{name}` must have the channels and dtype of `planes[0][0]` ({first.shape[0]}, {first.dtype}), "
                    f"got shape {tuple(plane.shape)} and {plane.dtype}"
                )
            if plane.shape[1] < 2 or plane.shape[2] < 2:
                raise ValueError(f"`{name}` must have at least 2 vertices per side, got shape {tuple(plane.shape)}")
            check_same_device(x=x, **{name: plane})


def kplanes_features(
    x: torch.Tensor, planes: Sequence[Sequence[torch.Tensor]], combine: Combine = "product"
) -> torch.Tensor:
    """Factorised-grid features of ``x``.

    x: ``(*, d)`` in ``[0, 1]`` (refused outside in eager mode, clamped under ``torch.compile``);
    planes: per scale, one ``(F, R_j, R_i)`` grid per pair of :func:`plane_pairs` ``(d)``, one ``F``
    and dtype throughout. Returns ``(*, F S)`` (``product``/``sum``) or ``(*, F S P)``
    (``concat``) in the planes' dtype.
    """
    x = check_finite("x", check_float_tensor("x", x))
    check_choice("combine", combine, ("product", "sum", "concat"))
    pairs = plane_pairs(x.shape[-1]) if x.ndim else []
    if not pairs:
        raise ValueError(
            f"`x` must have last dimension d >= 2 (a plane per coordinate pair), got shape {tuple(x.shape)}"
        )
    _check_planes(planes, len(pairs), x)
    flat = check_unit_box("x", x).reshape(-1, x.shape[-1]).clamp(0, 1)
    out = []
    for scale in planes:
        feats = [sample_plane(plane, flat[:, [i, j]]) for plane, (i, j) in zip(scale, pairs)]
        if combine == "product":
            out.append(torch.stack(feats).prod(0))
        elif combine == "sum":
            out.append(torch.stack(feats).sum(0))
        else:
            out.extend(feats)
    result = torch.cat(out, dim=-1)
    return result.reshape(*x.shape[:-1], result.shape[-1])


class _Planes(Encoding):
    """Learned planes per scale and coordinate pair; subclasses fix the scales and the combination."""

    combine: Combine = "product"

    def __init__(
        self,
        in_dim: int,
        features: int,
        sizes: list[list[tuple[int, int]]],
        device,
        dtype,
        *,
        sides: dict[str, tuple[object, int]],
    ) -> None:
        super().__init__(in_dim)
        self.features = check_positive_int("features", features)
        factory = {"device": device, "dtype": check_dtype("dtype", dtype)}
        # all planes together, refused before any is allocated by the largest of the sizes that set them
        # (``sides``: each resolution argument, as given, and the largest side it sets)
        vertices = sum(ri * rj for scale in sizes for ri, rj in scale)
        name, (given, _) = max({"features": (features, features), **sides}.items(), key=lambda item: item[1][1])
        check_fits(name, given, (features, vertices), dtype or torch.get_default_dtype(), device)
        self.pairs = plane_pairs(in_dim)
        self.planes = nn.ParameterList(
            [nn.Parameter(torch.empty(features, rj, ri, **factory)) for scale in sizes for ri, rj in scale]
        )
        if self.planes[0].device.type != "meta":
            self.reset_parameters()

    def by_scale(self) -> list[list[torch.Tensor]]:
        p = len(self.pairs)
        # planes read one by one: a slice is a new ParameterList, which wraps tensors swapped in by
        # torch.func.functional_call as new leaf Parameters, cut off from the caller's graph
        return [[self.planes[k] for k in range(s, s + p)] for s in range(0, len(self.planes), p)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(*, in_dim)`` in ``[0, 1]`` -> ``(*, out_dim)`` in ``x``'s dtype."""
        x = check_unit_box("x", self.check_input(x))
        return kplanes_features(x, self.by_scale(), self.combine).to(x.dtype)


@register(
    "kplanes",
    paper="Fridovich-Keil et al. 2023, arXiv:2301.10241",
    summary="Learned planes of every coordinate pair, multiplied elementwise, at several scales concatenated.",
)
class KPlanes(_Planes):
    """K-planes of 3-D space or 4-D space-time (time last).

    Args:
        in_dim: 3 (space) or 4 (space-time, time last).
        features: ``F``, channels of every plane (32 in the paper).
        resolution: spatial resolution of the coarsest scale (64 in the paper).
        scales: spatial multipliers of the resolution, one per scale (``(1, 2, 4, 8)`` in the paper).
        time_resolution: resolution of the time axis at every scale (4-D only; default ``resolution``).
    """

    def __init__(
        self,
        in_dim: int = 3,
        features: int = 32,
        resolution: int = 64,
        scales: Sequence[int] = (1, 2, 4, 8),
        time_resolution: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if check_int("in_dim", in_dim) not in (3, 4):
            raise ValueError(f"`in_dim` must be 3 (space) or 4 (space-time), got {in_dim!r}")
        self.resolution = check_int("resolution", resolution, minimum=2)
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
            raise ValueError(f"`scales` must be a non-empty sequence of positive ints, got {scales!r}")
        self.scales = tuple(check_positive_int(f"scales[{k}]", s) for k, s in enumerate(scales))
        if time_resolution is not None:
            check_int("time_resolution", time_resolution, minimum=2)
        self.time_resolution = time_resolution or resolution
        axes = [[resolution * s] * 3 + [self.time_resolution] for s in self.scales]
        sizes = [[(res[i], res[j]) for i, j in plane_pairs(in_dim)] for res in axes]
        sides = {"scales" if max(self.scales) > resolution else "resolution": (
            self.scales if max(self.scales) > resolution else resolution, resolution * max(self.scales)
        )}
        if in_dim == 4:
            sides["time_resolution"] = (self.time_resolution, self.time_resolution)
        super().__init__(in_dim, features, sizes, device, dtype, sides=sides)

    def reset_parameters(self) -> None:
        """Spatial planes ``U(0.1, 0.5)``, planes touching time 1 (a static start), as in the paper."""
        for k, plane in enumerate(self.planes):
            _i, j = self.pairs[k % len(self.pairs)]
            if j == 3:
                nn.init.ones_(plane)
            else:
                nn.init.uniform_(plane, 0.1, 0.5)

    @property
    def out_dim(self) -> int:
        return self.features * len(self.scales)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, features={self.features}, resolution={self.resolution}, scales={self.scales}"


@register(
    "triplane",
    paper="Chan et al. 2022, arXiv:2112.07945",
    summary="Three learned axis-aligned feature planes of a 3-D point, summed (EG3D) or multiplied or concatenated.",
)
class Triplane(_Planes):
    """Three planes ``xy, xz, yz`` at one resolution.

    Args:
        in_dim: must be 3.
        features: ``F``, channels per plane (32 in EG3D).
        resolution: ``R``, grid vertices per side (256 in EG3D).
        combine: ``"sum"`` (EG3D), ``"product"`` (K-planes' Hadamard product) or ``"concat"``.
    """

    def __init__(
        self,
        in_dim: int = 3,
        features: int = 32,
        resolution: int = 64,
        combine: Combine = "sum",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if in_dim != 3:
            raise ValueError(f"`in_dim` must be 3 (a triplane; see kplanes for space-time), got {in_dim!r}")
        self.resolution = check_int("resolution", resolution, minimum=2)
        self.combine = check_choice("combine", combine, ("sum", "product", "concat"))
        super().__init__(in_dim, features, [[(resolution, resolution)] * 3], device, dtype, sides={"resolution": (resolution, resolution)})

    def reset_parameters(self) -> None:
        """``N(0, 0.1^2)`` for a sum or concatenation; ``U(0.1, 0.5)`` for a product (as K-planes)."""
        for plane in self.planes:
            if self.combine == "product":
                nn.init.uniform_(plane, 0.1, 0.5)
            else:
                nn.init.normal_(plane, 0.0, 0.1)

    @property
    def out_dim(self) -> int:
        return self.features * (3 if self.combine == "concat" else 1)

    def extra_repr(self) -> str:
        return f"features={self.features}, resolution={self.resolution}, combine={self.combine!r}"
