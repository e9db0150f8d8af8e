"""The cached cos/sin of explicit RoPE positions (posenc/rotary/angle_cache.py): equal to computing them
directly, and the remembered range of the last positions tensor never stale."""

from __future__ import annotations

import torch

from posenc.core.frequencies import cos_sin, inverse_frequencies
from posenc.rotary import angle_cache


def _direct(positions: torch.Tensor, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return cos_sin(positions, inverse_frequencies(dim, 10000.0))


def test_range_and_gathered_positions_equal_direct_angles():
    angle_cache.clear()
    for positions in (torch.arange(3, 40)[None], torch.tensor([[5, 1, 9, 2]]), torch.tensor([[7, 8], [0, 300]])):
        got = angle_cache.rope_cos_sin(positions, 8, 10000.0)
        for g, w in zip(got, _direct(positions)):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_the_range_of_a_positions_tensor_is_read_once_per_version(monkeypatch):
    angle_cache.clear()
    reads = []
    real = torch.aminmax
    monkeypatch.setattr(angle_cache.torch, "aminmax", lambda t: reads.append(1) or real(t))
    positions = torch.arange(6)
    # a fresh (1, n) view per call, as apply_rope makes of (n,) positions: read once
    first = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    again = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    assert len(reads) == 1
    torch.testing.assert_close(again, first)
    # written in place (through a view): read again, and the angles follow the new values
    positions[2:].add_(10)
    moved = angle_cache.rope_cos_sin(positions.unsqueeze(0), 8, 10000.0)
    assert len(reads) == 2
    for g, w in zip(moved, _direct(positions.unsqueeze(0))):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    # another tensor with equal values, and an inference tensor (no version counter), are read afresh
    angle_cache.rope_cos_sin(torch.arange(6).unsqueeze(0), 8, 10000.0)
    with torch.inference_mode():
        frozen = torch.arange(4, 10)
    for _ in range(2):
        for g, w in zip(angle_cache.rope_cos_sin(frozen, 8, 10000.0), _direct(frozen)):
            torch.testing.assert_close(g, w, atol=0, rtol=0)
    assert len(reads) == 5
