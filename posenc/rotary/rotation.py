"""The RoPE rotation itself, written two ways: the plain expression and the eager fallback.

The plain expression (:func:`rotate_expr`) is what :mod:`posenc.rotary.fused` compiles into one
kernel and what an outer ``torch.compile`` traces; it loads ``x`` once, rotates in float32 or
better and stores in ``x``'s dtype. The eager fallback (:func:`rotate_eager`) is the fastest
uncompiled form measured by ``posenc bench``: adjacent pairs as one complex multiply over a complex
view, split halves written into one preallocated output with an exact custom backward.

Pair layouts: adjacent features ``(x0, x1), (x2, x3), ...`` (``interleaved=True``) or split halves
``(x_i, x_{i + r/2})`` (``interleaved=False``). Only the first ``r = 2 * cos.shape[-1]`` features
are rotated; the rest pass through unchanged (partial rotation).
"""

from __future__ import annotations

import torch

from posenc.core.precision import arithmetic_dtype


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half inputs and float32, float64 for float64: the rotation's arithmetic dtype."""
    return arithmetic_dtype(x.dtype)


def _bf16_bits(y: torch.Tensor) -> torch.Tensor:
    """float32 ``y`` rounded to bfloat16 (to nearest, ties to even), as int32 words whose high 16
    bits are the bfloat16 and whose low 16 bits are garbage. Overflow rounds to infinity as the cast
    does; only a NaN with an all-zero upper mantissa (never produced by arithmetic) would differ."""
    bits = y.view(torch.int32)
    return bits + (0x7FFF + ((bits >> 16) & 1))


def words_ok(x: torch.Tensor) -> bool:
    """Whether the adjacent pairs of ``x`` can be viewed as one integer word each (bfloat16 pairs as
    int32, float32 pairs as int64; on CPU, where that form is faster); checked outside traced code
    (it reads the storage offset)."""
    return (
        x.dtype in (torch.bfloat16, torch.float32)
        and x.device.type == "cpu"
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(st % 2 == 0 for st in x.stride()[:-1])
    )


def _rotate_bf16_pair_words(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Adjacent bfloat16 pairs rotated through int32 words: x (..., r) bf16, c, s (..., r/2) float32.

    A pair ``(x0, x1)`` is one little-endian int32 word ``x1 << 16 | x0``; each half shifted or
    masked into the high bits *is* that value in float32, so the pair unpacks and repacks with
    elementwise integer operations on contiguous words, which inductor's CPU code vectorises (its
    loop over interleaved bf16 elements is scalar). Bit-identical to the cast of the float32 result.
    """
    words = x.view(torch.int32)  # (..., r/2)
    x0 = (words << 16).view(torch.float32)
    x1 = (words & -65536).view(torch.float32)
    lo = _bf16_bits(x0 * c - x1 * s)
    hi = _bf16_bits(x0 * s + x1 * c)
    return (((lo >> 16) & 0xFFFF) | (hi & -65536)).view(torch.bfloat16)


def _rotate_f32_pair_words(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Adjacent float32 pairs rotated through int64 words: x (..., r) float32, c, s (..., r/2).

    A pair ``(x0, x1)`` is one little-endian int64 word ``x1 << 32 | x0``; its halves are narrowed to
    int32 and reinterpreted as float32, and the results are widened and merged back, all elementwise
    on contiguous words, which inductor's CPU code vectorises. The arithmetic is the plain float32
    rotation, so the result is that of the other forms.
    """
    words = x.view(torch.int64)  # (..., r/2)
    x0 = (words & 0xFFFFFFFF).to(torch.int32).view(torch.float32)
    x1 = (words >> 32).to(torch.int32).view(torch.float32)
    lo = (x0 * c - x1 * s).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    hi = (x0 * s + x1 * c).view(torch.int32).to(torch.int64) << 32
    return (lo | hi).view(torch.float32)


def rotate_expr(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, words: bool = False
) -> torch.Tensor:
    """x: ``(..., n, d)``; cos, sin: broadcastable to ``(..., n, r/2)`` with ``r <= d``.

    Returns ``x``'s shape and dtype: the first ``r`` features rotated, the rest passed through.
    ``words``: adjacent bfloat16 or float32 pairs rotated as integer words (the caller checked
    :func:`words_ok`).
    """
    work = work_dtype(x)
    rot = 2 * cos.shape[-1]
    if interleaved and words:
        rotate_words = _rotate_bf16_pair_words if x.dtype == torch.bfloat16 else _rotate_f32_pair_words
        out = rotate_words(x[..., :rot], cos.to(work), sin.to(work))
        return out if rot == x.shape[-1] else torch.cat((out, x[..., rot:]), dim=-1)
    xf, c, s = x[..., :rot].to(work), cos.to(work), sin.to(work)
    # each rotated half is cast before it is joined, so a compiler writes it straight into the
    # output in x's dtype instead of through a float32 intermediate
    if interleaved:
        # (..., n, r) -> (..., n, r/2, 2): adjacent features form a pair
        pairs = xf.unflatten(-1, (-1, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
        out = torch.stack(((x1 * c - x2 * s).to(x.dtype), (x1 * s + x2 * c).to(x.dtype)), dim=-1).flatten(-2)
    else:
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat(((x1 * c - x2 * s).to(x.dtype), (x1 * s + x2 * c).to(x.dtype)), dim=-1)
    return out if rot == x.shape[-1] else torch.cat((out, x[..., rot:]), dim=-1)


def _rotate_halves_into(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Split-halves rotation written straight into ``out``: two passes over each half, no temporaries."""
    h = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :h], x[..., h:], out[..., :h], out[..., h:]
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)
    return out


class _RotateHalves(torch.autograd.Function):
    """The split-halves rotation with its exact backward: a rotation by the opposite angle."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate_halves_into(x, cos, sin, torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: out= forms are not differentiable, the expression is
            return rotate_expr(grad, cos, -sin, interleaved=False), None, None
        return _rotate_halves_into(grad, cos, -sin, torch.empty_like(grad)), None, None


def _complex_view_ok(x: torch.Tensor) -> bool:
    return x.stride(-1) == 1 and x.storage_offset() % 2 == 0 and all(st % 2 == 0 for st in x.stride()[:-1])


def _rotate_full_eager(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    work = work_dtype(x)
    xf = x.to(work)
    if interleaved:
        # a complex view needs even strides and an even storage offset: clone (contiguous() keeps an odd offset)
        xf = xf if _complex_view_ok(xf) else xf.clone(memory_format=torch.contiguous_format)
        # (..., n, r) -> (..., n, r/2) complex: adjacent features are the real and imaginary parts
        rotated = torch.view_as_complex(xf.unflatten(-1, (-1, 2))) * torch.complex(cos.to(work), sin.to(work))
        return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
    return _RotateHalves.apply(xf, cos.to(work), sin.to(work)).to(x.dtype)


def rotate_eager(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """The uncompiled rotation, same contract as :func:`rotate_expr`.

    Gradients flow to ``cos``/``sin`` too when they require them (learned frequencies), through the
    plain expression.
    """
    if cos.requires_grad or sin.requires_grad:
        return rotate_expr(x, cos, sin, interleaved)
    rot = 2 * cos.shape[-1]
    if rot == x.shape[-1]:
        return _rotate_full_eager(x, cos, sin, interleaved)
    return torch.cat((_rotate_full_eager(x[..., :rot], cos, sin, interleaved), x[..., rot:]), dim=-1)
