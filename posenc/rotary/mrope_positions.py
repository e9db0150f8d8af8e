"""The (temporal, height, width) position ids of M-RoPE for a sequence of text, image and video spans
(Qwen2-VL, arXiv:2409.12191, its ``get_rope_index``; Qwen2.5-VL, arXiv:2502.13923, for absolute-time
temporal ids).

- A text span of ``L`` tokens starting at ``s`` gets ids ``s .. s + L - 1`` on all three axes.
- An image or video span with patch grid ``(t, H, W)`` is ``t * (H/m) * (W/m)`` tokens after the
  vision encoder merges ``m x m`` patches (``spatial_merge_size``), in (t, row, col) raster order;
  token ``(i, r, c)`` gets ids ``(s + i * step, s + r, s + c)``. ``step`` is 1 (Qwen2-VL), or with
  ``tokens_per_second`` set (Qwen2.5-VL) ``tokens_per_second * seconds_per_grid`` for videos: the
  temporal id then counts absolute time, truncated to an integer. As in transformers, ``seconds_per_grid``
  is float32 (the processor's ``second_per_grid_ts``) and ``i * step`` is formed in float32 before the
  truncation, so ids where the exact product is an integer come out as the released models saw them.
- The span after a vision span starts one past the largest id it used (the released Qwen2-VL and
  Qwen2.5-VL code). transformers 5 advances by ``max(H, W) / m`` instead; the two agree unless a
  span's temporal ids outgrow its height and width (long videos, absolute time).

Checked against transformers' Qwen2-VL / Qwen2.5-VL ``get_rope_index`` where installed
(tests/rotary/test_mrope_positions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from posenc.core.validation import check_choice, check_fits, check_float, check_int

#: ``("text", length)``, ``("image", (t, h, w))``, ``("video", (t, h, w))`` or
#: ``("video", (t, h, w), seconds_per_grid)``.
Span = tuple[str, int] | tuple[str, Sequence[int]] | tuple[str, Sequence[int], float]


def mrope_position_ids(
    spans: Sequence[Span],
    *,
    spatial_merge_size: int = 1,
    tokens_per_second: float | None = None,
    start: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """int64 ids ``(3, n)`` (time, height, width) of the tokens of ``spans``, in order.

    spans: ``("text", length)``, ``("image", (t, h, w))``, ``("video", (t, h, w))`` or
    ``("video", (t, h, w), seconds_per_grid)``, grids in patches before merging.
    spatial_merge_size: patches merged per side into one token (2 in Qwen2-VL).
    tokens_per_second: Qwen2.5-VL's absolute-time temporal ids for videos (None: Qwen2-VL's
    consecutive frame indices). start: the first id.
    Stack several sequences' ids along dim 1 for the ``(3, b, n)`` :func:`apply_mrope` takes.
    """
    merge = check_int("spatial_merge_size", spatial_merge_size, minimum=1)
    if tokens_per_second is not None:
        check_float("tokens_per_second", tokens_per_second, positive=True)
    pos = check_int("start", start, minimum=0)
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
        raise TypeError(f"`spans` must be a sequence of (kind, size) tuples, got {type(spans).__name__}")
    parts = []
    for i, span in enumerate(spans):
        if not isinstance(span, tuple) or len(span) not in (2, 3):
            raise ValueError(f"`spans[{i}]` must be (kind, size) or ('video', grid, seconds_per_grid), got {span!r}")
        kind = check_choice(f"spans[{i}][0]", span[0], ("text", "image", "video"))
        if kind == "text":
            if len(span) != 2:
                raise ValueError(f"`spans[{i}]` must be ('text', length), got {span!r}")
            length = check_int(f"spans[{i}][1]", span[1], minimum=0)
            check_fits(f"spans[{i}][1]", length, (3, length), torch.int64, device)  # its ids in the result
            parts.append(torch.arange(pos, pos + length, device=device).expand(3, -1))
            pos += length
            continue
        if len(span) == 3 and kind != "video":
            raise ValueError(f"`spans[{i}]`: only a video span takes seconds_per_grid, got {span!r}")
        step: int | torch.Tensor = 1
        seconds = check_float(f"spans[{i}][2]", span[2], positive=True) if len(span) == 3 else 1.0
        if kind == "video" and tokens_per_second is not None:
            # as transformers forms it: the processor's float32 second_per_grid_ts times tokens_per_second,
            # in float32 (float64 truncates i * 25 * (1/3) to 24 at i = 3 where float32 gives 25)
            step = tokens_per_second * torch.tensor(seconds, dtype=torch.float32)
        ids = _grid_ids(span[1], merge, step, f"spans[{i}][1]", device) + pos
        parts.append(ids)
        pos = int(ids.max()) + 1 if ids.numel() else pos
    if not parts:
        return torch.zeros(3, 0, dtype=torch.long, device=device)
    return torch.cat(parts, dim=1)


def _grid_ids(grid: Sequence[int], merge: int, step: int | torch.Tensor, name: str, device) -> torch.Tensor:
    if isinstance(grid, (int, str)) or not isinstance(grid, Sequence) or len(grid) != 3:
        raise ValueError(f"`{name}` must be a (t, h, w) patch grid, got {grid!r}")
    t, h, w = (check_int(f"{name}[{a}]", v, minimum=1) for a, v in enumerate(grid))
    if h % merge or w % merge:
        raise ValueError(f"`{name}` {tuple(grid)}: h and w must be divisible by spatial_merge_size={merge}")
    h, w = h // merge, w // merge
    check_fits(name, tuple(grid), (3, t, h, w), torch.int64, device)  # its ids in the result
    time = (torch.arange(t, device=device) * step).long()
    # (3, t, h, w) -> (3, t*h*w): raster order over (time, row, col)
    ids = torch.stack(
        torch.meshgrid(time, torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    )
    return ids.flatten(1)
