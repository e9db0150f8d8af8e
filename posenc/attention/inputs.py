"""The checks every attention entry makes of its inputs, so a wrong shape, dtype or device is named
at the call instead of failing deep inside a matmul, or (SDPA) broadcasting into a wrong answer."""

from __future__ import annotations

import torch

from posenc.core.validation import check_float_tensor


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
