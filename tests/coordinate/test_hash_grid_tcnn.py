"""The hash grid in tiny-cuda-nn's convention and the optional tiny-cuda-nn backend.

On CPU: the configuration mapping and layout on hand-computed cases, the PyTorch path in the tcnn
convention against a per-point float64 transcription of tiny-cuda-nn's rules (half-cell offset,
``ceil(scale) + 1`` vertices, dense wrap, sizes rounded up to 8), and the backend's errors. With
``tinycudann`` and CUDA: the two backends' outputs and table gradients agree.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from posenc.coordinate import HashGrid
from posenc.coordinate.hash_grid import tcnn_encoding_config, tcnn_level_layout, tcnn_level_scales, tinycudann_available

PRIMES = (1, 2654435761, 805459861)


def tcnn_scale(level: int, base: int, per_level_scale: float) -> float:
    """tiny-cuda-nn's ``grid_scale``: ``exp2f(l * log2f(s)) * N_min - 1`` in float32 (numpy, not torch)."""
    f = np.float32
    return float(np.exp2(f(level) * np.log2(f(per_level_scale))) * f(base) - f(1))


def reference(points, grid: HashGrid):
    """Per point, level and corner in Python floats and ints, by tiny-cuda-nn's rules."""
    table = grid.table.detach().double().tolist()
    d, big = grid.in_dim, 2**grid.log2_hashmap_size
    out, offset = [], 0
    levels = []
    for level in range(grid.num_levels):
        scale = tcnn_scale(level, grid.base_resolution, grid.per_level_scale)
        res = math.ceil(scale) + 1
        size = min(big, -(-(res**d) // 8) * 8)
        levels.append((scale, res, size, offset))
        offset += size
    for p in points.tolist():
        row = []
        for scale, res, size, first in levels:
            pos = [v * scale + 0.5 for v in p]
            low = [math.floor(v) for v in pos]
            frac = [v - c for v, c in zip(pos, low)]
            acc = [0.0] * grid.features_per_level
            for corner in itertools.product((0, 1), repeat=d):
                c = [lo + k for lo, k in zip(low, corner)]
                if big < res**d:
                    h = 0
                    for ci, prime in zip(c, PRIMES):
                        h ^= ci * prime
                    index = h % big
                else:
                    index = sum(ci * res**i for i, ci in enumerate(c)) % size
                weight = math.prod(f if k else 1 - f for f, k in zip(frac, corner))
                acc = [a + weight * t for a, t in zip(acc, table[first + index])]
            row += acc
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def test_layout_on_hand_computed_3d_levels():
    # N_min = 4, s = 2: scale_l = 4 * 2^l - 1 = 3, 7, 15, 31; res = 4, 8, 16, 32 vertices;
    # res^3 = 64, 512, 4096, 32768 against T = 2^10: dense, dense, hashed, hashed
    grid = HashGrid(3, 4, 2, 10, 4, 32, convention="tcnn", backend="torch")
    assert grid.per_level_scale == pytest.approx(2.0)
    assert grid.level_scales == [3.0, 7.0, 15.0, 31.0]
    assert grid.resolutions == [4, 8, 16, 32]
    assert grid.level_sizes == [64, 512, 1024, 1024]
    assert grid.level_hashed == [False, False, True, True]
    assert grid.level_offset.tolist() == [0, 64, 576, 1600]
    assert grid.table.shape == (2624, 2)  # tiny-cuda-nn's n_params = 2624 * 2


def test_layout_rounds_sizes_up_to_8_and_resolutions_up():
    # N_min = 3, s = 1.5: scales 2, 3.5, 5.75 -> res 3, 5, 7 -> 9, 25, 49 entries -> 16, 32, 56
    scales = tcnn_level_scales(3, 3, 1.5)
    assert scales == [2.0, 3.5, 5.75]
    res, sizes, hashed = tcnn_level_layout(scales, 2, 12)
    assert (res, sizes, hashed) == ([3, 5, 7], [16, 32, 56], [False, False, False])


def test_config_maps_every_argument():
    grid = HashGrid(3, 16, 2, 19, 16, 512, convention="tcnn", backend="torch")
    config = grid.tcnn_config()
    assert config == {
        "otype": "Grid",
        "type": "Hash",
        "hash": "CoherentPrime",
        "interpolation": "Linear",
        "n_levels": 16,
        "n_features_per_level": 2,
        "log2_hashmap_size": 19,
        "base_resolution": 16,
        "per_level_scale": pytest.approx(2 ** (1 / 3)),  # b = exp(ln(512 / 16) / 15)
    }
    with pytest.raises(ValueError, match="`features_per_level` must be 1, 2, 4 or 8"):
        tcnn_encoding_config(4, 3, 10, 4, 2.0)
    with pytest.raises(ValueError, match="`num_levels` must be <= 128"):
        tcnn_encoding_config(129, 2, 10, 4, 1.01)


def test_dense_index_and_half_cell_offset_on_a_hand_computed_point():
    # one dense 2-D level: scale 7, res 8 (64 entries); x = (0.5, 0.25) -> pos (4.0, 2.25):
    # cell (4, 2), weights (1, 0) x (0.75, 0.25): rows 4 + 2*8 = 20 and 4 + 3*8 = 28
    grid = HashGrid(2, 1, 1, 10, 8, 8, convention="tcnn", backend="torch").double()
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.shape[0], dtype=torch.float64)[:, None])
    out = grid(torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    assert out.item() == pytest.approx(0.75 * 20 + 0.25 * 28)
    # x = (1, 1): pos (7.5, 7.5), cell (7, 7), weights 1/4; the corners past the grid wrap modulo 64:
    # 7 + 7*8 = 63, 8 + 56 = 64 -> 0, 7 + 64 = 71 -> 7, 8 + 64 = 72 -> 8
    out = grid(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert out.item() == pytest.approx(0.25 * (63 + 0 + 7 + 8))


@pytest.mark.parametrize("in_dim", [2, 3])
def test_matches_float64_reference_of_tcnn_rules(in_dim):
    grid = HashGrid(in_dim, 5, 2, 8, 3, 40, convention="tcnn", backend="torch").double()
    assert True in grid.level_hashed and False in grid.level_hashed
    with torch.no_grad():
        grid.table.normal_()
    points = torch.rand(40, in_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    points[0] = 1.0  # the far corner steps past the grid: dense wrap, hashed past-the-end vertex
    points[1] = 0.0
    torch.testing.assert_close(grid(points), reference(points, grid), atol=1e-12, rtol=1e-12)


def test_conventions_share_the_interface_and_differ_in_values():
    paper = HashGrid(2, 3, 2, 8, 4, 16)
    tcnn = HashGrid(2, 3, 2, 8, 4, 16, convention="tcnn", backend="torch")
    assert paper.out_dim == tcnn.out_dim and set(paper.state_dict()) == set(tcnn.state_dict()) == {"table"}
    x = torch.rand(8, 2)
    with torch.no_grad():
        tcnn.table.normal_()
        paper.table.normal_()
    assert not torch.allclose(paper(x), tcnn(x)[:, :])  # different placements
    tcnn(x).sum().backward()
    assert tcnn.table.grad is not None and tcnn.table.grad.abs().sum() > 0


def test_gradcheck_tcnn_convention():
    grid = HashGrid(3, 3, 2, 6, 2, 12, convention="tcnn", backend="torch").double()
    with torch.no_grad():
        grid.table.normal_()
    x = (torch.rand(5, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: grid(x), (x,))


def test_auto_runs_pytorch_on_cpu():
    grid = HashGrid(2, 2, 2, 6, 2, 8, convention="tcnn")  # backend="auto"
    x = torch.rand(3, 2)
    assert not grid.uses_tcnn(x)
    assert grid(x).shape == (3, 4)


@pytest.mark.skipif(tinycudann_available(), reason="tinycudann and CUDA are present")
def test_tcnn_backend_without_tinycudann_is_refused_by_name():
    with pytest.raises(ValueError, match="`backend`='tcnn' needs the optional `tinycudann` package"):
        HashGrid(3, 4, 2, 10, 4, 32, convention="tcnn", backend="tcnn")


def test_bad_backend_and_convention_are_named():
    with pytest.raises(ValueError, match="`backend`='tcnn' needs convention='tcnn'"):
        HashGrid(3, 4, 2, 10, 4, 32, backend="tcnn")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        HashGrid(3, backend="cuda")
    with pytest.raises(ValueError, match="`convention` must be one of"):
        HashGrid(3, convention="nerfstudio")
    with pytest.raises(ValueError, match="`features_per_level` must be 1, 2, 4 or 8"):
        HashGrid(3, 4, 3, 10, 4, 32, convention="tcnn", backend="tcnn")


@pytest.mark.skipif(not tinycudann_available(), reason="needs tinycudann and a CUDA device")
@pytest.mark.parametrize("in_dim", [2, 3])
def test_tcnn_backend_equals_pytorch_path(in_dim):
    torch.manual_seed(0)
    fast = HashGrid(in_dim, 8, 2, 12, 4, 128, convention="tcnn", backend="tcnn", device="cuda")
    slow = HashGrid(in_dim, 8, 2, 12, 4, 128, convention="tcnn", backend="torch", device="cuda")
    with torch.no_grad():
        fast.table.normal_()
        slow.table.copy_(fast.table)
    x = torch.rand(4096, in_dim, device="cuda")
    a, b = fast(x), slow(x)
    assert fast.uses_tcnn(x) and not slow.uses_tcnn(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(fast.table.grad, slow.table.grad, atol=1e-4, rtol=1e-4)
