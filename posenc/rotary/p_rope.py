"""p-RoPE (Barbero et al. 2024, "Round and Round We Go! What makes Rotary Positional Encodings
useful?", arXiv:2410.06205): keep only the highest fraction ``p`` of RoPE's frequencies and leave the
feature pairs of the lowest ones unrotated.

The lowest frequencies barely turn over a context, so they act as semantic channels that positional
rotation slowly corrupts; p-RoPE sets them to zero. With ``d/2`` pairs, the first
``floor(p * d/2)`` pairs (the fastest, ``base^(-2i/d)`` with the original exponent) rotate and the
rest see angle 0: cos 1 and sin 0 exactly, so they pass through unchanged. This differs from partial
rotary (``rotary_fraction``), which rotates the first features of the head with a geometric ladder
re-spread over the rotated width. Transformers calls the same layout ``"proportional"``
(Gemma 3n/4), with ``partial_rotary_factor`` as ``p``.

Verified against a float64 transcription (tests/rotary/test_p_rope.py) and transformers'
``_compute_proportional_rope_parameters`` (tests/rotary/test_hf.py).
"""

from __future__ import annotations

import torch

from posenc.core.validation import check_float, check_float_tensor


def kept_pairs(pairs: int, p: float) -> int:
    """How many of ``pairs`` frequency bands p-RoPE rotates: ``floor(p * pairs)``."""
    return int(check_float("p", p, minimum=0.0, maximum=1.0) * 2 * pairs // 2)


def keep_highest_frequencies(inv_freq: torch.Tensor, p: float) -> torch.Tensor:
    """``inv_freq`` ``(f,)`` (ordered fastest first) with all but the first ``floor(p * f)`` set to 0."""
    check_float_tensor("inv_freq", inv_freq, ndim=1)
    keep = kept_pairs(inv_freq.shape[-1], p)
    if keep == inv_freq.shape[-1]:
        return inv_freq
    mask = torch.arange(inv_freq.shape[-1], device=inv_freq.device) < keep
    return torch.where(mask, inv_freq, torch.zeros((), dtype=inv_freq.dtype, device=inv_freq.device))
