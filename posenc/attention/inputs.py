"""The checks every attention entry makes of its inputs, so a wrong shape, dtype or device is named
at the call instead of failing deep inside a matmul, or (SDPA) broadcasting into a wrong answer."""

from __future__ import annotations

import torch

from posenc.attention.masks import MaskSpec
from posenc.core.validation import check_float_tensor, check_tensor


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q ``(b, h, n, d)``, k ``(b, h, m, d)``, v ``(b, h, m, dv)``: floating point, one dtype, one device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_tensor(name, t, ndim=4)
    if k.shape[-1] != q.shape[-1] or k.shape[:-1] != v.shape[:-1] or k.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"`q`, `k`, `v` must be (b, h, n, d), (b, h, m, d), (b, h, m, dv), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"`q`, `k`, `v` must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"`q`, `k`, `v` must be on one device, got {q.device}, {k.device}, {v.device}")


def check_bias(bias: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor) -> None:
    """A materialised bias must be floating point, on q's device, and broadcast to ``(b, h, n, m)``."""
    if bias is None:
        return
    check_float_tensor("bias", bias)
    target = (*q.shape[:-1], k.shape[-2])
    try:
        fits = bias.ndim <= 4 and torch.broadcast_shapes(bias.shape, target) == target
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"`bias` must broadcast to (b, h, n, m) = {target}, got {tuple(bias.shape)}")
    if bias.device != q.device:
        raise ValueError(f"`bias` is on {bias.device} but `q` is on {q.device}")


def check_mask(mask: MaskSpec | None, q: torch.Tensor, k: torch.Tensor) -> None:
    """A mask must be a :class:`MaskSpec` whose tensors fit q ``(b, h, n, d)`` and k ``(b, h, m, d)``:
    key_mask bool ``(b, m)``, q_docs/k_docs integer ``(b, n)``/``(b, m)``, on q's device; a causal or
    windowed mask needs ``n <= m`` (the queries are the last n of the m keys)."""
    if mask is None:
        return
    if not isinstance(mask, MaskSpec):
        raise TypeError(f"`mask` must be a posenc MaskSpec or None, got {type(mask).__name__}")
    (b, _, n, _), m = q.shape, k.shape[-2]
    if (mask.causal or mask.window is not None) and n > m:
        raise ValueError(
            f"a causal or windowed `mask` places the n queries at the last n of the m keys: n ({n}) must be "
            f"at most m ({m})"
        )
    for name, t, rows, integer in (
        ("key_mask", mask.key_mask, m, False), ("q_docs", mask.q_docs, n, True), ("k_docs", mask.k_docs, m, True)
    ):
        if t is None:
            continue
        check_tensor(f"mask.{name}", t)
        kind_ok = (not t.is_floating_point() and t.dtype != torch.bool) if integer else t.dtype == torch.bool
        if not kind_ok or tuple(t.shape) != (b, rows):
            kind = "an integer" if integer else "a bool"
            raise ValueError(f"`mask.{name}` must be {kind} tensor of shape ({b}, {rows}), got {t.dtype} {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"`mask.{name}` is on {t.device} but `q` is on {q.device}")
