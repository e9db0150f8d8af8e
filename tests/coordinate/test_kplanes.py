"""K-planes and the triplane against a per-point float64 bilinear transcription (arXiv:2301.10241, eq. 1-3)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from posenc.coordinate import KPlanes, Triplane
from posenc.coordinate.kplanes import gather_bilinear, sample_plane
from posenc.functional import kplanes_features


def bilinear(plane, u, v):
    """plane (F, R_j, R_i) as nested lists; vertex k at k / (R - 1)."""
    rj, ri = len(plane[0]), len(plane[0][0])
    su, sv = u * (ri - 1), v * (rj - 1)
    i0, j0 = min(math.floor(su), ri - 2), min(math.floor(sv), rj - 2)
    fu, fv = su - i0, sv - j0
    return [
        (1 - fu) * (1 - fv) * ch[j0][i0] + fu * (1 - fv) * ch[j0][i0 + 1] + (1 - fu) * fv * ch[j0 + 1][i0]
        + fu * fv * ch[j0 + 1][i0 + 1]
        for ch in plane
    ]


def reference(points, planes, combine):
    rows = []
    for q in points.tolist():
        row = []
        for scale in planes:
            pairs = list(itertools.combinations(range(len(q)), 2))
            feats = [bilinear(p.tolist(), q[i], q[j]) for p, (i, j) in zip(scale, pairs)]
            if combine == "product":
                row += [math.prod(f[c] for f in feats) for c in range(len(feats[0]))]
            elif combine == "sum":
                row += [sum(f[c] for f in feats) for c in range(len(feats[0]))]
            else:
                row += [v for f in feats for v in f]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("in_dim", [3, 4])
def test_kplanes_matches_float64_reference(in_dim):
    enc = KPlanes(in_dim, features=2, resolution=3, scales=(1, 2), time_resolution=4).double()
    with torch.no_grad():
        for p in enc.planes:
            p.normal_()
    x = torch.rand(12, in_dim, dtype=torch.float64)
    x[0] = 1.0
    x[1] = 0.0
    want = reference(x, enc.by_scale(), "product")
    torch.testing.assert_close(enc(x), want, atol=1e-12, rtol=1e-12)
    assert enc.out_dim == 4 == want.shape[-1]


@pytest.mark.parametrize("combine", ["sum", "product", "concat"])
def test_triplane_matches_float64_reference(combine):
    enc = Triplane(features=2, resolution=5, combine=combine).double()
    x = torch.rand(7, 3, dtype=torch.float64)
    torch.testing.assert_close(enc(x), reference(x, enc.by_scale(), combine), atol=1e-12, rtol=1e-12)
    assert enc(x).shape[-1] == enc.out_dim


def test_plane_shapes_follow_scales_and_time():
    enc = KPlanes(4, features=2, resolution=8, scales=(1, 2), time_resolution=5)
    shapes = [tuple(p.shape) for p in enc.planes]
    # pairs xy, xz, xt, yz, yt, zt; a plane (F, R_j, R_i)
    assert shapes[:6] == [(2, 8, 8), (2, 8, 8), (2, 5, 8), (2, 8, 8), (2, 5, 8), (2, 5, 8)]
    assert shapes[6] == (2, 16, 16) and shapes[8] == (2, 5, 16)


def test_space_time_starts_static():
    """Time planes start at 1: at initialisation the features do not depend on t."""
    enc = KPlanes(4, features=3, resolution=6, scales=(1,))
    x = torch.rand(10, 4)
    moved = x.clone()
    moved[:, 3] = torch.rand(10)
    torch.testing.assert_close(enc(x), enc(moved))


def test_gradcheck_planes_and_coordinates():
    enc = KPlanes(3, features=2, resolution=3, scales=(1,)).double()
    planes = [torch.randn_like(p, requires_grad=True) for p in enc.planes]
    x = (torch.rand(4, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, *p: kplanes_features(x, [list(p)]), (x, *planes))


def test_traced_gather_form_is_the_same_bilinear_interpolation():
    """The form ``torch.compile`` traces (a gather of the four corners) against the transcription and
    against ``grid_sample``, on non-square planes, at the edges and corners, with gradients."""
    gen = torch.Generator().manual_seed(7)
    plane = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    edges = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.2, 1.0], [0.6, 0.4]], dtype=torch.float64)
    uv = torch.cat([torch.rand(20, 2, generator=gen, dtype=torch.float64), edges])
    want = torch.tensor([bilinear(plane.tolist(), u, v) for u, v in uv.tolist()], dtype=torch.float64)
    torch.testing.assert_close(gather_bilinear(plane, uv), want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sample_plane(plane, uv), want, atol=1e-12, rtol=1e-12)
    inside = (uv[:20] * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(gather_bilinear, (plane.clone().requires_grad_(), inside))
    # float32 agrees with grid_sample to rounding, gradients included
    p32, uv32 = plane.float().requires_grad_(), inside.detach().float().requires_grad_()
    got, ref = gather_bilinear(p32, uv32), sample_plane(p32, uv32)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    g = torch.randn(got.shape, generator=gen)
    torch.testing.assert_close(
        torch.autograd.grad(got, (p32, uv32), g), torch.autograd.grad(ref, (p32, uv32), g), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("dtype, side", [(torch.bfloat16, 64), (torch.float16, 128)])
def test_half_precision_planes_sample_at_the_exact_coordinates(dtype, side):
    """grid_sample placed the sample in the planes' dtype: bf16 planes of 64 vertices were off by up to
    0.88 on unit-normal values, fp16 planes of 128 by 0.2 (and fp16 at 512 read outside the plane)."""
    gen = torch.Generator().manual_seed(3)
    plane = torch.randn(2, side, side, generator=gen).to(dtype)
    uv = torch.cat([torch.rand(200, 2, generator=gen), torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])])
    want = torch.tensor([bilinear(plane.double().tolist(), u, v) for u, v in uv.tolist()], dtype=torch.float64)
    got = sample_plane(plane, uv)
    assert got.dtype == dtype
    # only the result's own rounding is left (values below 4: 2^-8 * 4 for bf16)
    torch.testing.assert_close(got.double(), want, atol=0.02 if dtype == torch.bfloat16 else 0.003, rtol=0)


def test_bad_input_is_named():
    enc = KPlanes(3, features=2, resolution=4, scales=(1,))
    with pytest.raises(ValueError, match=r"`x` must lie in \[0.0, 1.0\]"):
        enc(torch.tensor([[0.5, 1.2, 0.1]]))
    with pytest.raises(ValueError, match="`x` must have last dimension in_dim=3"):
        enc(torch.rand(2, 4))
    with pytest.raises(ValueError, match="`in_dim` must be 3 .* or 4"):
        KPlanes(2)
    with pytest.raises(TypeError, match="`in_dim` must be an int, got float 3.0"):  # range(3.0) failed before
        KPlanes(3.0, features=2, resolution=4, scales=(1,))
    with pytest.raises(ValueError, match="`scales` must be a non-empty sequence"):
        KPlanes(3, scales=())
    with pytest.raises(ValueError, match=r"`scales\[1\]` must be >= 1"):
        KPlanes(3, scales=(1, 0))
    with pytest.raises(ValueError, match="`in_dim` must be 3"):
        Triplane(4)
    with pytest.raises(ValueError, match="`combine` must be one of"):
        Triplane(combine="max")
    with pytest.raises(ValueError, match="needs 3 planes per scale"):
        kplanes_features(torch.rand(2, 3), [[torch.zeros(1, 2, 2)]])
    assert enc(torch.empty(0, 3)).shape == (0, 2)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (KPlanes, {"features": 10**12}, "features"),
        (KPlanes, {"resolution": 10**12}, "resolution"),
        (KPlanes, {"scales": (1, 10**6)}, "scales"),
        (KPlanes, {"in_dim": 4, "time_resolution": 10**12}, "time_resolution"),
        (Triplane, {"resolution": 10**6}, "resolution"),
        (Triplane, {"features": 10**12}, "features"),
    ],
)
def test_planes_larger_than_memory_are_refused_by_name(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`=.* more than the .* of memory"):
        cls(**kwargs)
    try:  # shapes only: nothing to allocate, unless the size overflows what a tensor can describe
        cls(**kwargs, device="meta")
    except ValueError as error:
        assert f"`{name}`=" in str(error) and "more than a tensor can hold" in str(error)


@pytest.mark.parametrize("enc", [Triplane(3, 2, 4), KPlanes(3, features=2, resolution=3, scales=(1, 2))])
def test_planes_swapped_in_by_functional_call_receive_gradients(enc):
    # by_scale sliced the ParameterList, which re-wrapped the swapped-in tensors as new leaf
    # Parameters: torch.func.grad returned zeros for every plane, backward left their grads None
    enc = enc.double()
    x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = {name: p.detach().clone() for name, p in enc.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(enc, p, (x,)).square().sum())(params)
    enc(x).square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], p.grad, atol=1e-12, rtol=1e-12)
