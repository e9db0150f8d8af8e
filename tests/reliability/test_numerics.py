"""Numerics at scale: encodings with angles, run in bf16 and fp16 at positions up to 1,000,000,
match a float64 reference written here from each formula, within the output dtype's resolution.

Rounding a value to a dtype with machine epsilon ``eps`` moves it by at most ``eps / 2`` times its
magnitude, so an encoding whose angles are formed in float64 (and reduced before any narrower
``sin``/``cos``) lands within ``eps`` of the exact value. Angles formed in half precision would be
off by whole radians at these positions (bf16 cannot even count past 256).
"""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.models import Transformer
from posenc.relative.transformer_xl import relative_sinusoid
from posenc.spatial.sinusoidal_nd import sinusoidal_coords
from posenc.vision.rope_2d import apply_rope_2d

HALF = [torch.bfloat16, torch.float16]
#: Positions up to 10^6, including both ends and values past the 2^16 and 2^20 - 1 boundaries.
POSITIONS = [0, 1, 2, 1000, 65_537, 524_287, 999_999, 1_000_000]


def assert_within_dtype(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, cases=None) -> None:
    eps = torch.finfo(dtype).eps
    assert got.dtype == dtype, f"output dtype {got.dtype}, expected {dtype}"
    torch.testing.assert_close(got.double(), want, atol=eps, rtol=eps)
    if cases is not None:
        cases["numerics at scale"] += 1


def _pos() -> torch.Tensor:
    return torch.tensor(POSITIONS)


def _large_coordinates(dtype: torch.dtype) -> torch.Tensor:
    """Coordinates near the largest the input dtype holds: 10^6 in bf16, 65504 (its maximum) in fp16."""
    big = 1_000_000.0 if dtype == torch.bfloat16 else 65_504.0
    return torch.tensor([[0.0, 1.0], [big - 1, -3.5], [big, 0.125]]).to(dtype)


# --- references, from the formulas ------------------------------------------------------------------


def ref_sinusoid(p: float, dim: int, base: float, interleaved: bool) -> list[float]:
    """PE(p, 2i) = sin(p / base^(2i/d)), PE(p, 2i+1) = cos(...); halves when not interleaved."""
    sins = [math.sin(p / base ** (2 * i / dim)) for i in range(dim // 2)]
    coss = [math.cos(p / base ** (2 * i / dim)) for i in range(dim // 2)]
    if interleaved:
        return [v for pair in zip(sins, coss) for v in pair]
    return sins + coss


def ref_sinusoid_2d(row: float, col: float, dim: int) -> list[float]:
    """Half the channels per axis, rows first; each axis sines then cosines (the MAE split)."""
    return ref_sinusoid(row, dim // 2, 10000.0, False) + ref_sinusoid(col, dim // 2, 10000.0, False)


def ref_rotate_halves(x: torch.Tensor, angles: list[list[float]], scale: float = 1.0) -> torch.Tensor:
    """x ``(n, d)`` float64, angles ``(n, d/2)``: split-halves rotation (x1, x2) -> (x1 c - x2 s, x2 c + x1 s)."""
    out = torch.empty_like(x)
    half = x.shape[-1] // 2
    for t in range(x.shape[0]):
        for i in range(half):
            c, s = scale * math.cos(angles[t][i]), scale * math.sin(angles[t][i])
            x1, x2 = x[t, i].item(), x[t, i + half].item()
            out[t, i], out[t, i + half] = x1 * c - x2 * s, x2 * c + x1 * s
    return out


# --- 1-D sinusoidal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("interleaved", [True, False])
def test_sinusoidal_in_half_precision_at_large_positions(dtype, interleaved, cases):
    dim = 8
    enc = posenc.create("sinusoidal", dim=dim, interleaved=interleaved).to(dtype)
    x = torch.zeros(1, len(POSITIONS), dim, dtype=dtype)
    want = torch.tensor([ref_sinusoid(p, dim, 10000.0, interleaved) for p in POSITIONS], dtype=torch.float64)
    assert_within_dtype(enc(x, positions=_pos())[0], want, dtype, cases)
    # implicit positions, through the cached table
    n = 4
    want = torch.tensor([ref_sinusoid(999_997 + t, dim, 10000.0, interleaved) for t in range(n)], dtype=torch.float64)
    assert_within_dtype(enc(torch.zeros(1, n, dim, dtype=dtype), offset=999_997)[0], want, dtype, cases)


def test_transformer_xl_relative_table_at_large_distances(cases):
    dim = 8
    distances = torch.tensor([-1_000_000, -3, 0, 7, 999_999])
    want = torch.tensor([ref_sinusoid(float(d), dim, 10000.0, False) for d in distances.tolist()], dtype=torch.float64)
    got = relative_sinusoid(distances, dim)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)
    cases["numerics at scale"] += 1


# --- RoPE and its scalings --------------------------------------------------------------------------

HEAD_DIM, BASE, FACTOR, L0 = 8, 10000.0, 4.0, 4096


def ref_rope_inverse_frequencies(scaling: str, seq_len: int) -> tuple[list[float], float]:
    """Inverse frequencies and the cos/sin factor of each scaling, from the papers' formulas."""
    d = HEAD_DIM
    plain = [BASE ** (-2 * i / d) for i in range(d // 2)]
    if scaling == "none":
        return plain, 1.0
    if scaling == "linear":  # Chen et al. 2023: positions divided by the factor
        return [f / FACTOR for f in plain], 1.0
    if scaling == "ntk":  # base * s^(d/(d-2))
        b = BASE * FACTOR ** (d / (d - 2))
        return [b ** (-2 * i / d) for i in range(d // 2)], 1.0
    if scaling == "dynamic_ntk":  # the NTK base for the current length L
        b = BASE * max(1.0, FACTOR * seq_len / L0 - (FACTOR - 1)) ** (d / (d - 2))
        return [b ** (-2 * i / d) for i in range(d // 2)], 1.0
    if scaling == "yarn":  # Peng et al. 2023, eqs. 17-22 (ramp over the band index, beta 32 and 1)
        def band(rotations: float) -> float:
            return d * math.log(L0 / (rotations * 2 * math.pi)) / (2 * math.log(BASE))

        low, high = max(math.floor(band(32.0)), 0), min(math.ceil(band(1.0)), d - 1)
        out = []
        for i, f in enumerate(plain):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            out.append(f / FACTOR * ramp + f * (1 - ramp))
        return out, 0.1 * math.log(FACTOR) + 1.0
    raise AssertionError(scaling)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scaling", ["none", "linear", "ntk", "dynamic_ntk", "yarn"])
def test_rope_in_half_precision_at_large_positions(dtype, scaling, cases):
    kw = {} if scaling == "none" else {"factor": FACTOR, "original_max_len": L0}
    rope = posenc.create("rope", head_dim=HEAD_DIM, scaling=scaling, **kw).to(dtype)
    n = 4
    x = torch.randn(1, 1, n, HEAD_DIM).to(dtype)
    # implicit positions 999_997 .. 1_000_000 (the dynamic NTK length is one past the last: 1_000_001)
    inv, scale = ref_rope_inverse_frequencies(scaling, 1_000_001)
    angles = [[(999_997 + t) * f for f in inv] for t in range(n)]
    want = ref_rotate_halves(x[0, 0].double(), angles, scale)
    assert_within_dtype(rope(x, offset=999_997)[0, 0], want, dtype, cases)
    # explicit positions spanning 0 .. 10^6 (dynamic NTK: one past the largest)
    x = torch.randn(1, 1, len(POSITIONS), HEAD_DIM).to(dtype)
    inv, scale = ref_rope_inverse_frequencies(scaling, max(POSITIONS) + 1)
    angles = [[p * f for f in inv] for p in POSITIONS]
    want = ref_rotate_halves(x[0, 0].double(), angles, scale)
    assert_within_dtype(rope(x, positions=_pos())[0, 0], want, dtype, cases)


@pytest.mark.parametrize("dtype", HALF)
def test_rope_in_a_half_precision_model_keeps_float32_tables(dtype):
    model = Transformer(16, 16, 1, 2, position="rope").to(dtype)
    rope = model.position
    assert rope.cos_cached.dtype == torch.float32
    out = model(torch.randint(0, 16, (1, 3)), positions=torch.tensor([999_998, 999_999, 1_000_000]))
    assert out.dtype == dtype and torch.isfinite(out).all()


# --- 2-D: sincos_2d and rope_2d ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
def test_sincos_2d_in_half_precision_at_large_coordinates(dtype, cases):
    dim = 8
    coords = torch.tensor([[0, 0], [999_999, 3], [12, 1_000_000], [524_287, 65_537]])
    got = sinusoidal_coords(coords, dim)  # the module's functional core: float32
    want = torch.tensor([ref_sinusoid_2d(r, c, dim) for r, c in coords.tolist()], dtype=torch.float64)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)
    # the module on a 1000 x 1000 grid, explicit token indices up to 10^6 - 1, in half precision
    enc = posenc.create("sincos_2d", dim=dim, grid=1000).to(dtype)
    tokens = [0, 999, 1000, 500_500, 999_999]
    want = torch.tensor([ref_sinusoid_2d(t // 1000, t % 1000, dim) for t in tokens], dtype=torch.float64)
    got = enc(torch.zeros(1, len(tokens), dim, dtype=dtype), positions=torch.tensor(tokens))[0]
    assert_within_dtype(got, want, dtype, cases)


@pytest.mark.parametrize("dtype", HALF)
def test_rope_2d_in_half_precision_at_large_coordinates(dtype, cases):
    head_dim, base = 8, 100.0
    coords = torch.tensor(
        [[0.0, 0.0], [999_999.0, 3.0], [12.0, 1_000_000.0], [524_287.5, 65_537.25]], dtype=torch.float64
    )
    x = torch.randn(1, 1, 4, head_dim).to(dtype)
    got = apply_rope_2d(x, coords, base=base)[0, 0]
    quarter = head_dim // 4
    inv = [base ** (-2 * i / (head_dim // 2)) for i in range(quarter)]
    want = torch.empty(4, head_dim, dtype=torch.float64)
    xd = x[0, 0].double()
    for t, (row, col) in enumerate(coords.tolist()):
        # pairs (2j, 2j+1): the first head_dim/4 turn with the column, the rest with the row
        for j in range(head_dim // 2):
            a = (col if j < quarter else row) * inv[j % quarter]
            c, s = math.cos(a), math.sin(a)
            x1, x2 = xd[t, 2 * j].item(), xd[t, 2 * j + 1].item()
            want[t, 2 * j], want[t, 2 * j + 1] = x1 * c - x2 * s, x2 * c + x1 * s
    assert_within_dtype(got, want, dtype, cases)
    rope = posenc.create("rope_2d", head_dim=head_dim, grid=1000).to(dtype)
    assert rope(x, positions=torch.tensor([0, 999, 500_500, 999_999])).dtype == dtype


# --- coordinates and steps --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
def test_nerf_in_half_precision_at_large_coordinates(dtype, cases):
    L = 4
    enc = posenc.create("nerf", in_dim=2, num_frequencies=L).to(dtype)
    x = _large_coordinates(dtype)
    want = []
    for row in x.double().tolist():
        feats = list(row)
        for l in range(L):
            f = 2.0**l * math.pi
            feats += [math.sin(f * v) for v in row] + [math.cos(f * v) for v in row]
        want.append(feats)
    want = torch.tensor(want, dtype=torch.float64)
    assert_within_dtype(enc(x), want, dtype, cases)


@pytest.mark.parametrize("dtype", HALF)
def test_fourier_features_in_half_precision_at_large_coordinates(dtype, cases):
    enc = posenc.create("fourier_features", in_dim=2, num_features=4, sigma=3.0).to(dtype)
    B = enc.B.double()
    x = _large_coordinates(dtype)
    want = []
    for v in x.double():
        theta = [2 * math.pi * float(B[j] @ v) for j in range(B.shape[0])]
        want.append([math.cos(a) for a in theta] + [math.sin(a) for a in theta])
    want = torch.tensor(want, dtype=torch.float64)
    assert_within_dtype(enc(x), want, dtype, cases)


@pytest.mark.parametrize("dtype", HALF)
def test_timestep_in_half_precision_at_large_steps(dtype, cases):
    dim = 8
    enc = posenc.create("timestep", dim=dim, hidden=16).to(dtype)
    half = dim // 2
    want = []
    for t in POSITIONS:  # DDPM: [sin(t f_i), cos(t f_i)], f_i = exp(-i ln(10000) / (half - 1))
        f = [math.exp(-i * math.log(10000.0) / (half - 1)) for i in range(half)]
        want.append([math.sin(t * v) for v in f] + [math.cos(t * v) for v in f])
    got = enc.encode(_pos())
    assert_within_dtype(got.to(dtype), torch.tensor(want, dtype=torch.float64), dtype, cases)
    assert got.dtype in (torch.float32, dtype)
    assert enc(_pos()).dtype == dtype


@pytest.mark.parametrize("dtype", HALF)
def test_noise_level_in_half_precision_at_large_levels(dtype, cases):
    dim, scale = 8, 5000.0
    enc = posenc.create("noise_level", dim=dim, scale=scale).to(dtype)
    levels = torch.tensor([0.0, 0.5, 1.0, 199.99, 200.0], dtype=torch.float64)  # angles up to 10^6
    want = []
    for v in levels.tolist():
        f = [scale * 10000.0 ** (-2 * i / dim) for i in range(dim // 2)]
        want.append([math.sin(v * g) for g in f] + [math.cos(v * g) for g in f])
    assert_within_dtype(enc(levels), torch.tensor(want, dtype=torch.float64), dtype, cases)
