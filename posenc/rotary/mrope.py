"""Multimodal RoPE, M-RoPE (Qwen2-VL, Wang et al. 2024, arXiv:2409.12191; the interleaved layout of
Qwen3-VL).

Every token carries three position ids, (temporal, height, width). RoPE's ``R/2`` frequencies
``base^(-2j/R)`` (``R`` the rotated width) are shared out among the three axes and frequency ``j``
turns with the id of its axis:

- ``layout="chunked"`` (Qwen2-VL, Qwen2.5-VL): ``mrope_section = (s_t, s_h, s_w)`` consecutive
  blocks of frequencies, the first ``s_t`` for time, the next ``s_h`` for height, the last ``s_w``
  for width;
- ``layout="interleaved"`` (Qwen3-VL): frequencies cycle t, h, w, t, h, w, ...: frequency ``j`` is
  height's when ``j % 3 == 1`` and ``j < 3 * s_h``, width's when ``j % 3 == 2`` and ``j < 3 * s_w``,
  time's otherwise.

The frequencies are RoPE's unscaled ``base^(-2j/R)``. A Qwen-VL config whose ``rope_parameters`` name a
scaled ``rope_type`` (transformers builds yarn, dynamic, ... M-RoPE) changes the frequencies as well
as cos/sin's factor; that RoPE is not reproduced here, and passing its ``attention_scaling`` alone
gives other angles (a tiny Qwen3-VL with yarn factor 4: off by up to 6.2 after rotation).

Pairs are split halves ``(x_j, x_{j + R/2})`` (``rotate_half``), as in those models. Text tokens
carry three equal ids, where M-RoPE is 1-D RoPE. :func:`mrope_position_ids` builds the ids of a
sequence of text, image and video spans.

Verified against a float64 transcription and, where installed, against Hugging Face transformers'
Qwen2-VL and Qwen3-VL rotary embeddings (tests/rotary/test_mrope.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from posenc.core.frequencies import angle_dtype, inverse_frequencies
from posenc.core.precision import arithmetic_dtype
from posenc.core.validation import (
    check_choice,
    check_even,
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_positions,
    check_same_device,
)
from posenc.rotary.rope import apply_rotary

MropeLayout = Literal["chunked", "interleaved"]


def _check_sections(mrope_section: Sequence[int]) -> list[int]:
    if isinstance(mrope_section, (int, torch.Tensor)) or not isinstance(mrope_section, Sequence) or len(mrope_section) != 3:
        raise ValueError(f"`mrope_section` must be three ints (time, height, width frequencies), got {mrope_section!r}")
    return [check_int(f"mrope_section[{i}]", v, minimum=0) for i, v in enumerate(mrope_section)]


def mrope_axis_of_frequency(mrope_section: Sequence[int], layout: MropeLayout = "chunked") -> list[int]:
    """The axis (0 time, 1 height, 2 width) whose id turns each of the ``sum(mrope_section)`` frequencies."""
    check_choice("layout", layout, ("chunked", "interleaved"))
    s = _check_sections(mrope_section)
    if layout == "chunked":
        return [0] * s[0] + [1] * s[1] + [2] * s[2]
    axes = []
    for j in range(sum(s)):
        if j % 3 == 1 and j < 3 * s[1]:
            axes.append(1)
        elif j % 3 == 2 and j < 3 * s[2]:
            axes.append(2)
        else:
            axes.append(0)
    return axes


def mrope_cos_sin(
    position_ids: torch.Tensor,
    *,
    rotary_dim: int,
    mrope_section: Sequence[int],
    layout: MropeLayout = "chunked",
    base: float = 10000.0,
    attention_scaling: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(b, n, rotary_dim / 2)`` for ids ``(3, b, n)``, to rotate queries and keys with
    :func:`posenc.rotary.rope.apply_rotary` (split halves) after one computation.

    Each frequency's angle is its axis's id times the frequency, formed in float64 and reduced
    modulo 2π before the float32 sin/cos.
    """
    rot = check_even("rotary_dim", rotary_dim, why="RoPE rotates feature pairs")
    frequencies = sum(_check_sections(mrope_section))  # checked before a list of that many axes is built
    if 2 * frequencies != rot:
        raise ValueError(
            f"`mrope_section` {tuple(mrope_section)} sums to {frequencies} frequencies but the rotated width "
            f"{rot} has {rot // 2}; the sections must sum to rotary_dim / 2"
        )
    axes = mrope_axis_of_frequency(mrope_section, layout)
    check_float("base", base, positive=True)
    check_float("attention_scaling", attention_scaling, positive=True)
    check_float_dtype("dtype", dtype)
    check_positions("position_ids", position_ids)
    if position_ids.ndim != 3 or position_ids.shape[0] != 3:
        raise ValueError(
            f"`position_ids` must have shape (3, b, n) (time, height, width ids), got shape {tuple(position_ids.shape)}"
        )
    device = position_ids.device
    inv_freq = inverse_frequencies(rot, base, device=device)
    # (3, b, n) -> (b, n, f): the id each frequency turns with
    ids = position_ids.permute(1, 2, 0)[..., torch.tensor(axes, dtype=torch.long, device=device)]
    wide = angle_dtype(device)
    theta = ids.to(wide) * inv_freq.to(wide)
    work = arithmetic_dtype(dtype)  # a half dtype gets float32 values rounded once
    if work != wide:
        theta = theta - torch.round(theta * (1.0 / (2 * math.pi))) * (2 * math.pi)
    theta = theta.to(work)
    cos, sin = theta.cos(), theta.sin()
    if attention_scaling != 1.0:
        cos, sin = cos * attention_scaling, sin * attention_scaling
    return cos.to(dtype), sin.to(dtype)


def apply_mrope(
    x: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    mrope_section: Sequence[int],
    layout: MropeLayout = "chunked",
    base: float = 10000.0,
    rotary_dim: int | None = None,
    attention_scaling: float = 1.0,
) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` at multimodal ids ``position_ids`` ``(3, b | 1, n)``.

    mrope_section: frequencies per axis (time, height, width), summing to ``rotary_dim / 2``
    (Qwen2-VL: ``(16, 24, 24)`` for 128-wide heads; Qwen3-VL: ``(24, 20, 20)``). rotary_dim: the
    rotated width (default ``d``); the features past it pass through. attention_scaling: a factor
    on cos and sin; the frequencies stay unscaled, so with a scaled rope type's ``attention_scaling``
    this is not that type's RoPE (see the module docstring).
    """
    check_float_tensor("x", x, ndim=4)
    check_positions("position_ids", position_ids)
    if rotary_dim is None:
        check_even("x.shape[-1]", x.shape[-1], why="M-RoPE rotates feature pairs (or give an even `rotary_dim`)")
    rot = x.shape[-1] if rotary_dim is None else rotary_dim
    if isinstance(rot, int) and rot > x.shape[-1]:
        raise ValueError(f"`rotary_dim`={rot} exceeds the head width x.shape[-1]={x.shape[-1]}")
    b, _, n, _ = x.shape
    if position_ids.ndim == 3 and (position_ids.shape[-1] != n or (position_ids.shape[1] != 1 and position_ids.shape[1] != b)):
        raise ValueError(
            f"`position_ids` must have shape (3, b, n) with b={'1' if b == 1 else f'1 or {b}'}, n={n}, got shape {tuple(position_ids.shape)}"
        )
    check_same_device(x=x, position_ids=position_ids)
    work = arithmetic_dtype(x.dtype)
    cos, sin = mrope_cos_sin(
        position_ids,
        rotary_dim=rot,
        mrope_section=mrope_section,
        layout=layout,
        base=base,
        attention_scaling=attention_scaling,
        dtype=work,
    )
    # (b, n, f) -> (b, 1, n, f): broadcast over heads
    return apply_rotary(x, cos.unsqueeze(1), sin.unsqueeze(1), interleaved=False)
