"""Hash encoding against Müller et al. (2022), section 3: the hash on hand-computed points, a
per-point float64 transcription of eq. 2-4, gradients, and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from posenc.bench.peers import hash_grid_per_level
from posenc.coordinate import HashGrid
from posenc.coordinate.hash_grid import level_resolutions
from posenc.functional import hash_grid_encoding

PRIMES = (1, 2654435761, 805459861)


def reference(points, grid: HashGrid):
    """Per point, per level, per corner, in Python floats and ints: the paper's equations."""
    table = grid.table.detach().double().tolist()
    rows, offset = [], 0
    offsets = []
    for size in grid.level_sizes:
        offsets.append(offset)
        offset += size
    for p in points.tolist():
        row = []
        for n, size, first in zip(grid.resolutions, grid.level_sizes, offsets):
            scaled = [v * n for v in p]
            low = [min(math.floor(s), n - 1) for s in scaled]
            frac = [s - c for s, c in zip(scaled, low)]
            acc = [0.0] * grid.features_per_level
            for corner in itertools.product((0, 1), repeat=len(p)):
                c = [lo + k for lo, k in zip(low, corner)]
                if (n + 1) ** len(p) <= 2**grid.log2_hashmap_size:
                    index = sum(ci * (n + 1) ** i for i, ci in enumerate(c))
                else:
                    h = 0
                    for ci, prime in zip(c, PRIMES):
                        h ^= ci * prime
                    index = h % 2**grid.log2_hashmap_size
                weight = math.prod(f if k else 1 - f for f, k in zip(frac, corner))
                acc = [a + weight * t for a, t in zip(acc, table[first + index])]
            row += acc
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_growth_factor_and_resolutions_follow_the_paper():
    # N_min = 16, N_max = 512, L = 16: b = exp(ln 32 / 15) = 2^(1/3)
    res = level_resolutions(16, 16, 512)
    assert res[0] == 16 and res[-1] == 512
    assert res[:4] == [16, 20, 25, 32]  # floor(16 * 2^(l/3))
    assert level_resolutions(1, 8, 8) == [8]


def test_per_level_scale_given_as_tiny_cuda_nn_configs_give_it():
    # tiny-cuda-nn's example config: 16 levels, N_min 16, per_level_scale 1.5 (N_max 16 * 1.5^15 = 7006.3,
    # which no integer finest_resolution reproduces)
    paper = HashGrid(3, 16, 2, 12, 16, per_level_scale=1.5, device="meta")
    assert paper.per_level_scale == 1.5
    assert paper.resolutions == [math.floor(16 * 1.5**level) for level in range(16)]
    assert paper.finest_resolution == 7006
    tcnn = HashGrid(3, 16, 2, 12, 16, per_level_scale=1.5, convention="tcnn", device="meta")
    assert tcnn.tcnn_config()["per_level_scale"] == 1.5
    # tiny-cuda-nn's grid_scale: exp2(l * log2(s)) * N_min - 1, in float32
    s = torch.tensor(1.5, dtype=torch.float32)
    want = [(torch.exp2(torch.tensor(float(level)) * torch.log2(s)) * 16 - 1).item() for level in range(16)]
    assert tcnn.level_scales == want
    # an integer finest_resolution gives b = (7006 / 16)^(1/15), another placement
    assert HashGrid(3, 16, 2, 12, 16, 7006, convention="tcnn", device="meta").level_scales != want
    assert HashGrid(3, 4, 2, 12, 16, device="meta").finest_resolution == 512  # the default stays N_max = 512


@pytest.mark.parametrize("kwargs, match", [
    ({"finest_resolution": 64, "per_level_scale": 1.5}, "not both"),
    ({"per_level_scale": 0.5}, "per_level_scale"),
    ({"per_level_scale": float("nan")}, "per_level_scale"),
    ({"per_level_scale": 1e300}, "int64 hashing"),
])
def test_bad_per_level_scale_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HashGrid(3, 16, 2, 12, 16, device="meta", **kwargs)


def _index_table(grid: HashGrid) -> None:
    """Row r of the stacked table holds r, so a point on a vertex reads its index back."""
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.shape[0], dtype=torch.float64)[:, None])


def test_hash_on_a_hand_computed_point():
    grid = HashGrid(3, 1, 1, 8, 8, 8).double()  # (8+1)^3 = 729 > 2^8: hashed
    assert grid.level_hashed == [True]
    _index_table(grid)
    # vertex (3, 5, 7): 3 xor 5*2654435761 xor 7*805459861 = 9781445989, mod 256 = 101
    out = grid(torch.tensor([[3 / 8, 5 / 8, 7 / 8]], dtype=torch.float64))
    assert out.item() == 101
    grid2 = HashGrid(2, 1, 1, 8, 16, 16).double()  # 17^2 = 289 > 256: hashed
    _index_table(grid2)
    # vertex (1, 2): 1 xor 2*2654435761 = 5308871523, mod 256 = 99
    assert grid2(torch.tensor([[1 / 16, 2 / 16]], dtype=torch.float64)).item() == 99


def test_dense_index_on_a_hand_computed_point():
    grid = HashGrid(3, 1, 1, 8, 4, 4).double()  # 5^3 = 125 <= 256: dense
    assert grid.level_hashed == [False] and grid.level_sizes == [125]
    _index_table(grid)
    # vertex (1, 2, 3): 1 + 2*5 + 3*25 = 86
    assert grid(torch.tensor([[0.25, 0.5, 0.75]], dtype=torch.float64)).item() == 86


@pytest.mark.parametrize("in_dim", [2, 3])
def test_matches_float64_reference_across_dense_and_hashed_levels(in_dim):
    grid = HashGrid(in_dim, 5, 3, 7, 2, 40).double()
    assert True in grid.level_hashed and False in grid.level_hashed
    with torch.no_grad():
        grid.table.normal_()
    points = torch.rand(40, in_dim, dtype=torch.float64)
    points[0] = 1.0  # the closed upper faces
    points[1] = 0.0
    torch.testing.assert_close(grid(points), reference(points, grid), atol=1e-12, rtol=1e-12)


def test_per_level_transcription_agrees():
    grid = HashGrid(3, 6, 2, 10, 4, 64)
    x = torch.rand(300, 3)
    torch.testing.assert_close(grid(x), hash_grid_per_level(x, grid)(), atol=1e-6, rtol=1e-5)


def test_levels_are_contiguous_features_coarsest_first():
    grid = HashGrid(2, 3, 2, 6, 2, 8)
    assert grid.out_dim == 6
    x = torch.rand(4, 7, 2)
    assert grid(x).shape == (4, 7, 6)
    with torch.no_grad():
        grid.table.zero_()
        grid.table[: grid.level_sizes[0]] = 1.0
    out = grid(torch.rand(5, 2))
    torch.testing.assert_close(out[:, :2], torch.ones(5, 2))
    assert not out[:, 2:].any()


def test_gradcheck_table_and_coordinates():
    grid = HashGrid(3, 3, 2, 6, 2, 12).double()
    tables = [grid.level_resolution, grid.level_multiplier, grid.num_dense_levels, grid.level_size, grid.level_offset]
    table = torch.randn_like(grid.table, requires_grad=True)
    # away from cell faces, where the encoding is differentiable in x
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: hash_grid_encoding(x, t, *tables), (x, table))


def test_training_updates_only_touched_rows():
    grid = HashGrid(2, 2, 2, 6, 2, 16)
    grid(torch.full((1, 2), 0.3)).sum().backward()
    touched = grid.table.grad.abs().sum(-1) > 0
    assert 0 < int(touched.sum()) <= 2 * 4  # four corners per level


def test_half_precision_coordinates_keep_float32_arithmetic():
    grid = HashGrid(2, 4, 2, 8, 4, 64)
    x = torch.rand(10, 2)
    out = grid(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), grid(x.bfloat16().float()), atol=1e-2, rtol=1e-2)


def test_bad_input_is_named():
    grid = HashGrid(3, 2, 2, 6, 2, 8)
    with pytest.raises(ValueError, match=r"`x` must lie in \[0.0, 1.0\]"):
        grid(torch.tensor([[0.5, 1.5, 0.2]]))
    with pytest.raises(ValueError, match=r"`x` must lie in"):
        grid(torch.tensor([[-1e-3, 0.5, 0.2]]))
    with pytest.raises(ValueError, match="`x` must have last dimension in_dim=3"):
        grid(torch.rand(4, 2))
    with pytest.raises(ValueError, match="`x` must be finite"):
        grid(torch.tensor([[0.5, math.nan, 0.2]]))
    with pytest.raises(ValueError, match="`in_dim` must be 2 or 3"):
        HashGrid(4)
    with pytest.raises(ValueError, match="`finest_resolution` must be >= base_resolution"):
        HashGrid(3, 4, 2, 8, 32, 16)
    # finest_resolution not given: the refusal named it ('got 512'), a value the caller never passed
    with pytest.raises(ValueError, match="`base_resolution`=1024 is above the default finest_resolution=512"):
        HashGrid(3, 1, 2, 8, 1024)
    assert HashGrid(3, 1, 2, 8, 1024, 1024, device="meta").resolutions == [1024]
    with pytest.raises(ValueError, match="`log2_hashmap_size`"):
        HashGrid(3, log2_hashmap_size=0)


def test_compiled_forward_clamps_instead_of_checking():
    grid = HashGrid(2, 2, 2, 6, 2, 8)
    compiled = torch.compile(grid, fullgraph=True)
    x = torch.tensor([[1.5, -0.2], [0.3, 0.4]])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), grid(x.clamp(0, 1)))


def test_empty_batch():
    grid = HashGrid(2, 2, 2, 6, 2, 8)
    assert grid(torch.empty(0, 2)).shape == (0, 4)


def _brute_force_rates(grid: HashGrid) -> list[float]:
    """Every vertex's slot by the paper's formulas in Python ints; the share of vertices in a shared slot."""
    rates = []
    for n, hashed in zip(grid.resolutions, grid.level_hashed):
        slots = []
        for c in itertools.product(range(n + 1), repeat=grid.in_dim):
            if hashed:
                h = 0
                for ci, prime in zip(c, PRIMES):
                    h ^= ci * prime
                slots.append(h % 2**grid.log2_hashmap_size)
            else:
                slots.append(sum(ci * (n + 1) ** i for i, ci in enumerate(c)))
        counts = {s: slots.count(s) for s in set(slots)}
        rates.append(sum(counts[s] > 1 for s in slots) / len(slots))
    return rates


@pytest.mark.parametrize("in_dim", [2, 3])
def test_collision_rates_per_level(in_dim):
    from posenc.coordinate.hash_grid import level_collision_rates

    grid = HashGrid(in_dim, 4, 1, 6, 2, 12)
    rates = level_collision_rates(grid)
    assert rates == pytest.approx(_brute_force_rates(grid))
    assert all(r == 0 for r, h in zip(rates, grid.level_hashed) if not h)  # dense levels: one slot per vertex
    assert any(r > 0 for r in rates)
    assert level_collision_rates(grid, max_vertices=10)[-1] is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_levels": 10**12}, "num_levels"),  # used to loop over 10**12 levels in Python
        ({"features_per_level": 10**12}, "features_per_level"),
        ({"log2_hashmap_size": 30, "num_levels": 64, "finest_resolution": 4096}, "log2_hashmap_size"),
    ],
)
def test_a_table_larger_than_memory_is_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`=.* more than the .* of memory"):
        HashGrid(**kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_functional_tcnn_scales_must_be_finite_and_non_negative(bad):
    grid = HashGrid(3, 3, 2, 6, 2, 8, convention="tcnn")
    args = (grid.table, grid.level_resolution, grid.level_multiplier, grid.num_dense_levels, grid.level_size,
            grid.level_offset)
    scales = grid.level_scale.clone()
    scales[1] = bad  # used to give NaN features (or indices from the wrong side of the grid) silently
    with pytest.raises(ValueError, match="`scales` must be"):
        hash_grid_encoding(torch.rand(4, 3), *args, scales=scales)


@pytest.mark.parametrize("convention", ["paper", "tcnn"])
def test_the_module_reads_none_of_its_buffers_on_the_host(monkeypatch, convention):
    # its level layout is valid by construction: only the functional form checks it (about ten host reads
    # per call, each a GPU synchronisation in every step of a NeRF)
    def no_host_reads(*args, **kwargs):
        raise AssertionError("the module checked its own layout on the host")

    grid = HashGrid(2, num_levels=3, log2_hashmap_size=4, base_resolution=2, finest_resolution=8, convention=convention)
    x = torch.rand(5, 2)
    want = grid(x)
    monkeypatch.setattr("posenc.coordinate.hash_grid._check_layout", no_host_reads)
    monkeypatch.setattr("posenc.coordinate.hash_grid.can_read_values", no_host_reads)
    torch.testing.assert_close(grid(x), want)
