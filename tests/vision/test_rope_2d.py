"""Axial 2-D RoPE: per-pair rotation matrices in float64, offset-only logits, prefix tokens untouched."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc import get
from posenc.functional import apply_rope_2d
from posenc.vision import Rope2d, grid_coords, rope_2d_cos_sin


def reference_rope_2d(x: torch.Tensor, coords, base: float = 100.0) -> torch.Tensor:
    """x (b, h, n, d); coords list of (row, col). Pair j < d/4 turns with the column, the rest with the row."""
    d = x.shape[-1]
    out = x.clone()
    for t, (row, col) in enumerate(coords):
        for j in range(d // 2):
            f = j if j < d // 4 else j - d // 4
            angle = (col if j < d // 4 else row) * base ** (-4 * f / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., t, 2 * j], x[..., t, 2 * j + 1]
            out[..., t, 2 * j] = c * a - s * b
            out[..., t, 2 * j + 1] = s * a + c * b
    return out


@pytest.mark.parametrize("grid, head_dim", [((2, 3), 8), ((3, 3), 4), ((1, 4), 12)])
def test_matches_float64_reference(grid, head_dim):
    x = torch.randn(2, 2, grid[0] * grid[1], head_dim, dtype=torch.float64)
    coords = grid_coords(grid).tolist()
    ref = reference_rope_2d(x, coords)
    torch.testing.assert_close(Rope2d(head_dim, grid)(x), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(apply_rope_2d(x, grid_coords(grid)), ref, rtol=1e-6, atol=1e-6)


def test_fractional_coordinates():
    x = torch.randn(1, 1, 2, 8, dtype=torch.float64)
    coords = torch.tensor([[0.5, 1.25], [2.0, -0.75]], dtype=torch.float64)
    torch.testing.assert_close(apply_rope_2d(x, coords), reference_rope_2d(x, coords.tolist()), rtol=1e-6, atol=1e-6)


@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(-2, 2), st.integers(-2, 2))
def test_logit_depends_only_on_the_offset(r1, c1, r2, c2, dy, dx):
    torch.manual_seed(0)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def logit(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, 8)
        rq, rk = apply_rope_2d(both, torch.tensor([pq, pk], dtype=torch.float64))[0, 0]
        return float(rq @ rk)

    a = logit((r1 + dy, c1 + dx), (r1, c1))
    b = logit((r2 + dy, c2 + dx), (r2, c2))
    assert a == pytest.approx(b, abs=1e-5)


def test_rows_and_columns_are_both_encoded():
    x = torch.ones(1, 1, 1, 8)
    base = apply_rope_2d(x, torch.tensor([[0.0, 0.0]]))
    assert not torch.allclose(apply_rope_2d(x, torch.tensor([[1.0, 0.0]])), base)
    assert not torch.allclose(apply_rope_2d(x, torch.tensor([[0.0, 1.0]])), base)


def test_prefix_tokens_are_not_rotated_and_explicit_equals_implicit():
    enc = Rope2d(8, (2, 2), num_prefix_tokens=1)
    x = torch.randn(2, 2, 5, 8)
    out = enc(x)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(out[:, :, 1:], apply_rope_2d(x[:, :, 1:], grid_coords((2, 2))))
    torch.testing.assert_close(enc(x, positions=torch.arange(5)), out)
    keep = torch.tensor([0, 3, 4])
    torch.testing.assert_close(enc(x[:, :, keep], positions=keep), out[:, :, keep])


def test_dtype_kept_and_meta_device():
    enc = Rope2d(8, (2, 3), device="meta")
    enc.to_empty(device="cpu")
    fresh = Rope2d(8, (2, 3))
    torch.testing.assert_close(enc.cos_cached, fresh.cos_cached)
    x = torch.randn(1, 1, 6, 8, dtype=torch.bfloat16)
    assert fresh(x).dtype == torch.bfloat16
    assert fresh.state_dict() == {}


def test_registry_entry():
    info = get("rope_2d")
    assert info.family == "vision" and "2403.13298" in info.paper and info.cls is Rope2d


def test_bad_input():
    with pytest.raises(ValueError, match="head_dim"):
        Rope2d(6, (2, 2))
    with pytest.raises(ValueError, match="grid"):
        Rope2d(8, (2, 0))
    with pytest.raises(ValueError, match="x"):
        apply_rope_2d(torch.randn(1, 1, 2, 6), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="coords"):
        apply_rope_2d(torch.randn(1, 1, 2, 8), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="coords"):
        apply_rope_2d(torch.randn(1, 1, 2, 8), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x"):
        Rope2d(8, (2, 2))(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="positions"):
        Rope2d(8, (2, 2))(torch.randn(1, 1, 5, 8))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_cos_sin_refuse_an_integer_dtype(dtype):
    # int64 gave all-zero cos and sin tables (cos 1 = 0.54 truncated to 0), as rope_nd_cos_sin did
    with pytest.raises(ValueError, match="`dtype` must be a floating-point dtype"):
        rope_2d_cos_sin(torch.tensor([[1, 2]]), 8, dtype=dtype)


def test_cos_sin_refuse_a_0d_coordinate_by_name():
    # a 0-d tensor failed with 'IndexError: tuple index out of range' from coords.shape[-1]
    with pytest.raises(ValueError, match=r"`coords` must have shape \(..., 2\)"):
        rope_2d_cos_sin(torch.tensor(1.0), 8)


@pytest.mark.parametrize("explicit", [False, True])
def test_float64_queries_rotate_at_float64_angles(explicit):
    # the cached tables are float32; a float64 call forms its angles in float64, as the 1-D rope does
    grid, head_dim = (3, 5), 8
    x = torch.randn(2, 2, 1 + grid[0] * grid[1], head_dim, dtype=torch.float64)
    ref = reference_rope_2d(x[:, :, 1:], grid_coords(grid).tolist())
    positions = torch.arange(1 + grid[0] * grid[1]) if explicit else None
    out = Rope2d(head_dim, grid, num_prefix_tokens=1)(x, positions=positions)
    torch.testing.assert_close(out[:, :, 1:], ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(out[:, :, :1], x[:, :, :1], rtol=0, atol=0)
    coords = grid_coords(grid).to(torch.float64) + 0.25
    torch.testing.assert_close(
        apply_rope_2d(x[:, :, 1:], coords), reference_rope_2d(x[:, :, 1:], coords.tolist()), rtol=0, atol=1e-14
    )


@pytest.mark.parametrize("name", ["rope_2d", "rope_mixed"])
def test_compiles_with_dynamic_shapes(name):
    # rotate_pairs checked the angles' axes with `c not in (1, h)`, which dynamo evaluates as False
    # for some symbolic h equal to c: with dynamic=True the valid call was refused while tracing
    rope = get(name).cls(head_dim=8, grid=3, **({"heads": 2} if name == "rope_mixed" else {}))
    x = torch.randn(2, 2, 9, 8)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, p: rope(x, positions=p), fullgraph=True, dynamic=True, backend="eager")
    for n in (9, 6):
        p = torch.arange(9 - n, 9)
        torch.testing.assert_close(compiled(x[:, :, :n], p), rope(x[:, :, :n], positions=p))
