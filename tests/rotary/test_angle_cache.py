"""The cached cos/sin of explicit RoPE positions (posenc/rotary/angle_cache.py): equal to computing them
directly, whatever wrote the positions (on the CPU their range is read each call; elsewhere it is
remembered per tensor version)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.core.frequencies import cos_sin, inverse_frequencies
from posenc.rotary import angle_cache, cpu_kernel


def _direct(positions: torch.Tensor, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return cos_sin(positions, inverse_frequencies(dim, 10000.0))


def test_range_and_gathered_positions_equal_direct_angles():
    angle_cache.clear()
    for positions in (torch.arange(3, 40)[None], torch.tensor([[5, 1, 9, 2]]), torch.tensor([[7, 8], [0, 300]])):
        got = angle_cache.rope_cos_sin(positions, 8, 10000.0)
        for g, w in zip(got, _direct(positions)):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_positions_written_behind_torchs_back_are_seen_on_the_cpu():
    angle_cache.clear()
    positions = torch.arange(5)
    angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    positions.numpy()[:] += 7  # shared memory: torch's version counter does not move
    for g, w in zip(angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0), _direct(torch.arange(7, 12)[None])):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    positions.numpy()[:] = [3, 1, 4, 1, 5]  # no longer a range: gathered
    for g, w in zip(angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0), _direct(positions[None])):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


@pytest.fixture(params=["library", "numpy"])
def bounds_reader(request, monkeypatch):
    """The range of CPU positions read by the C++ library's one pass, or through NumPy where the
    library is not loaded."""
    if request.param == "library":
        if cpu_kernel.library() is None:
            pytest.skip("the C++ library cannot be built here")
    else:
        monkeypatch.setattr(cpu_kernel, "int64_bounds", lambda positions: None)
    return request.param


def test_bounds_of_ranges_and_other_positions(bounds_reader):
    cases = {
        (0, 1, 2, 3): (0, 3, True), (5,): (5, 5, True), (0, 2, 1): (0, 2, False), (2, 1, 0): (0, 2, False),
        (0, 0, 2): (0, 2, False), (4, 6, 8): (4, 8, False), (-3, -2, -1): (-3, -1, True),
    }
    for values, want in cases.items():
        assert angle_cache._bounds(torch.tensor(values)) == want, values
    assert angle_cache._bounds(torch.tensor([[0, 1], [0, 1]])) == (0, 1, False)  # two rows: gathered
    assert angle_cache._bounds(torch.arange(10)[::2]) == (0, 8, False)
    assert angle_cache._bounds(torch.tensor([254, 255], dtype=torch.uint8)) == (254, 255, True)
    extremes = torch.tensor([2**63 - 1, -(2**63)])  # one step of +1 modulo 2**64 is not a range
    assert angle_cache._bounds(extremes) == (-(2**63), 2**63 - 1, False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40), st.booleans())
def test_the_librarys_bounds_are_the_positions_range(values, as_range):
    if cpu_kernel.library() is None:
        pytest.skip("the C++ library cannot be built here")
    positions = torch.arange(values[0] % 1000, values[0] % 1000 + len(values)) if as_range else torch.tensor(values)
    low, high = int(positions.min()), int(positions.max())
    consecutive = high - low + 1 == positions.numel() and bool((positions.diff() == 1).all())
    assert cpu_kernel.int64_bounds(positions) == (low, high, consecutive)
    assert cpu_kernel.int64_bounds(positions.view(1, -1)) == (low, high, consecutive)
    if positions.numel() % 2 == 0 and positions.numel():
        assert cpu_kernel.int64_bounds(positions.view(2, -1)) == (low, high, False)  # two rows: gathered
    assert cpu_kernel.int64_bounds(positions.to(torch.int32)) is None  # other dtypes: read through NumPy
    if positions.numel() > 2:
        assert cpu_kernel.int64_bounds(positions[::2]) is None  # not contiguous: read through NumPy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the range is remembered off the CPU only")
def test_the_range_of_a_cuda_positions_tensor_is_read_once_per_version(monkeypatch):
    angle_cache.clear()
    reads = []
    real = torch.aminmax
    monkeypatch.setattr(angle_cache.torch, "aminmax", lambda t: reads.append(1) or real(t))
    positions = torch.arange(6, device="cuda")
    # a fresh (1, n) view per call, as apply_rope makes of (n,) positions: read once
    first = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    again = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    assert len(reads) == 1
    torch.testing.assert_close(again, first)
    # written in place (through a view): read again, and the angles follow the new values
    positions[2:].add_(10)
    moved = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    assert len(reads) == 2
    for g, w in zip(moved, _direct(positions.unsqueeze(0).cpu())):
        torch.testing.assert_close(g.cpu(), w, atol=0, rtol=0)
    # another tensor with equal values, and an inference tensor (no version counter), are read afresh
    angle_cache.rope_cos_sin(torch.arange(6, device="cuda").unsqueeze(0), 8, 10000.0)
    with torch.inference_mode():
        frozen = torch.arange(4, 10, device="cuda")
    for _ in range(2):
        angle_cache.rope_cos_sin(frozen, 8, 10000.0)
    assert len(reads) == 5


def test_remembered_views_follow_a_regrown_table_and_the_heads_axis():
    angle_cache.clear()
    short = torch.arange(10)
    first = angle_cache.rope_cos_sin(short, 8, 10000.0, per_head=True)
    assert first[0].shape == (1, 1, 10, 4)
    angle_cache.rope_cos_sin(torch.arange(5000), 8, 10000.0)  # the table is rebuilt longer
    again = angle_cache.rope_cos_sin(short, 8, 10000.0, per_head=True)
    table = angle_cache._tables[(8, 10000.0, torch.float32, short.device)][0]
    assert again[0].data_ptr() == table.data_ptr()  # a view of the current table, not the dropped one
    for g, w in zip(again, _direct(short[None])):
        torch.testing.assert_close(g, w.unsqueeze(1), atol=0, rtol=0)
    per_row = torch.tensor([[2, 3, 4], [9, 1, 0]])  # (b, n) gathered: (b, 1, n, dim/2)
    for g, w in zip(angle_cache.rope_cos_sin(per_row, 8, 10000.0, per_head=True), _direct(per_row)):
        torch.testing.assert_close(g, w.unsqueeze(1), atol=0, rtol=0)


def test_module_window_views_follow_a_moved_window():
    from posenc.core.positions import Positions
    from posenc.rotary import RotaryPositionEncoding

    rope = RotaryPositionEncoding(8, cache_len=16)
    x = torch.randn(1, 2, 4, 8)
    want = rope(x)
    rope.rotate(x, x, q_positions=Positions(4, 100_000), k_positions=Positions(4, 100_000))  # window moves
    torch.testing.assert_close(rope(x), want, atol=0, rtol=0)
    q, _ = rope.rotate(x, x, q_positions=Positions(4), k_positions=Positions(4))
    torch.testing.assert_close(q, want, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_gathered_positions_of_every_integer_dtype_equal_direct_angles(dtype):
    # uint8 positions once indexed the table as a boolean mask, int8/int16 could not index it
    angle_cache.clear()
    for positions in (torch.tensor([[5, 1, 9, 2]]), torch.tensor([[7, 8], [0, 100]])):
        got = angle_cache.rope_cos_sin(positions.to(dtype), 8, 10000.0, per_head=True)
        for g, w in zip(got, _direct(positions)):
            torch.testing.assert_close(g, w.unsqueeze(1), atol=0, rtol=0)
