"""One fused pass for the RoPE rotation of q and k: load, rotate in float32 registers, store.

Mechanism (chosen with ``posenc bench``, see docs/performance.md): the plain expression of
:func:`posenc.rotary.rotation.rotate_expr` compiled by ``torch.compile`` (inductor: a vectorised C++
loop on CPU, a Triton kernel on CUDA), lazily, once per pair layout, dtype, device type, number of
tensors and in-place flag, with dynamic shapes, so sequence length, batch and heads never recompile.
Inductor keeps the generated code in its on-disk cache, so later processes skip most of the
compilation. The backward is the same kernel with the opposite angle (a rotation's inverse is its
transpose), so no backward graph is compiled.

Switch: ``POSENC_FUSED=0`` (or ``off``) turns fusion off, ``POSENC_FUSED=1`` (``on``) uses it for
every size, unset (``auto``) uses it from :data:`MIN_FUSED_NUMEL` elements per call, below which a
compiled call's dispatch costs more than it saves, except for float32/float16 adjacent pairs on CPU,
where the eager complex multiply measured faster than inductor's (scalar) loop; bfloat16 pairs are
rotated as int32 words there (:func:`posenc.rotary.rotation.rotate_expr`), which vectorises. Every rotating function also takes
``fused=True/False`` which wins over the variable. Where compilation fails (no C++ compiler, an
unsupported platform) a warning is issued once and the eager path is used.

Under an outer ``torch.compile`` the plain expression is inlined and fused into the caller's graph.
"""

from __future__ import annotations

import os
import time
import types
import warnings
from collections.abc import Callable, Sequence

import torch

from posenc.rotary.rotation import rotate_eager, rotate_expr, words_ok

#: The environment variable that switches fusion: ``0``/``off``, ``1``/``on`` or ``auto`` (the default).
FUSED_ENV = "POSENC_FUSED"
#: In ``auto`` mode, the elements (all tensors of one call together) from which the fused kernel is used.
MIN_FUSED_NUMEL = 1 << 16
#: Devices inductor generates kernels for.
FUSED_DEVICES = ("cpu", "cuda")

_MODES = {"0": "off", "off": "off", "false": "off", "1": "on", "on": "on", "true": "on", "auto": "auto", "": "auto"}

#: (device type, dtype, interleaved, inplace, tensor count, bf16 words) -> compiled kernel, or None where compiling failed
_kernels: dict[tuple, Callable | None] = {}
#: the same keys -> seconds the first (compiling) call took
_first_call_seconds: dict[tuple, float] = {}
#: keys whose kernel refused a later input layout (warned once)
_warned: set[tuple] = set()


def fusion_mode() -> str:
    """``"off"``, ``"on"`` or ``"auto"`` from ``POSENC_FUSED``."""
    raw = os.environ.get(FUSED_ENV, "auto")
    mode = _MODES.get(raw.strip().lower())
    if mode is None:
        raise ValueError(f"environment variable {FUSED_ENV} must be one of 0, 1, off, on, auto; got {raw!r}")
    return mode


def compile_seconds() -> dict[tuple, float]:
    """Seconds taken by the first (compiling) call of each kernel built in this process."""
    return dict(_first_call_seconds)


def _kernel(xs: tuple[torch.Tensor, ...], cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, words: bool):
    return tuple(rotate_expr(x, cos, sin, interleaved, words) for x in xs)


def _kernel_inplace(
    xs: tuple[torch.Tensor, ...], cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, words: bool
) -> None:
    for x in xs:
        x.copy_(rotate_expr(x, cos, sin, interleaved, words))


def _own_code(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object: dynamo keeps its compiled variants (and their
    recompilation limit) per code object, so each kernel key gets its own."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name)


def _build(key: tuple) -> Callable:
    device_type, dtype, interleaved, inplace, count, words = key
    layout = "words" if words else "pairs" if interleaved else "halves"
    tag = f"{device_type}_{str(dtype).removeprefix('torch.')}_{layout}_{count}{'_inplace' if inplace else ''}"
    return torch.compile(_own_code(_kernel_inplace if inplace else _kernel, tag), dynamic=True, fullgraph=True)


def _call_kernel(xs: tuple[torch.Tensor, ...], cos, sin, interleaved: bool, inplace: bool):
    """Rotated tensors from the compiled kernel, or None where it cannot be compiled here."""
    words = interleaved and all(words_ok(x) for x in xs)
    key = (xs[0].device.type, xs[0].dtype, interleaved, inplace, len(xs), words)
    if key in _kernels and _kernels[key] is None:
        return None
    if key in _kernels:
        try:
            out = _kernels[key](xs, cos, sin, interleaved, words)
        except Exception as err:  # noqa: BLE001 - e.g. dynamo's recompile limit for one more input layout
            # the kernels compiled so far stay in use; this layout takes the eager path
            if key not in _warned:
                _warned.add(key)
                warnings.warn(f"posenc: the fused RoPE kernel could not be used for one input layout "
                              f"({type(err).__name__}); that layout uses the eager rotation", RuntimeWarning, stacklevel=3)
            return None
        return xs if inplace else out
    kernel = _build(key)
    start = time.perf_counter()
    try:
        out = kernel(xs, cos, sin, interleaved, words)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: use the eager path
        _kernels[key] = None
        warnings.warn(f"posenc: the fused RoPE kernel could not be compiled ({type(err).__name__}: {err}); "
                      f"using the eager rotation (set {FUSED_ENV}=0 to silence)", RuntimeWarning, stacklevel=3)
        return None
    _first_call_seconds[key] = time.perf_counter() - start
    _kernels[key] = kernel
    return xs if inplace else out


class _FusedRotation(torch.autograd.Function):
    """The fused rotation as one autograd node; its backward rotates the gradients back."""

    @staticmethod
    def forward(ctx, cos, sin, interleaved, inplace, *xs):
        out = _call_kernel(xs, cos, sin, interleaved, inplace)
        if out is None:
            out = tuple(rotate_eager(x, cos, sin, interleaved) for x in xs)
            if inplace:
                out = tuple(x.copy_(o) for x, o in zip(xs, out))
        if inplace:
            ctx.mark_dirty(*xs)
        ctx.save_for_backward(cos, sin)
        ctx.interleaved = interleaved
        return out

    @staticmethod
    def backward(ctx, *grads):
        cos, sin = ctx.saved_tensors
        grads = tuple(g.contiguous() for g in grads)
        back = _call_kernel(grads, cos, -sin, ctx.interleaved, False)
        if back is None:
            back = tuple(rotate_eager(g, cos, -sin, ctx.interleaved) for g in grads)
        return (None, None, None, None, *back)


def _wants_kernel(
    fused: bool | None, xs: Sequence[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor, interleaved: bool
) -> bool:
    if fused is False or xs[0].device.type not in FUSED_DEVICES or cos.requires_grad or sin.requires_grad:
        return False
    if len({(x.dtype, x.device) for x in xs}) > 1:
        return False
    mode = fusion_mode()
    if fused is True or mode == "on":
        return True
    if mode == "off" or sum(x.numel() for x in xs) < MIN_FUSED_NUMEL:
        return False
    # inductor's CPU code for adjacent pairs is a scalar loop, measured slower than the eager
    # complex multiply (docs/performance.md), except for bfloat16 pairs rotated as int32 words;
    # split halves vectorise
    return not (interleaved and xs[0].device.type == "cpu") or all(words_ok(x) for x in xs)


def rotate_tensors(
    xs: Sequence[torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, ...]:
    """Rotate every tensor of ``xs`` (each ``(..., n, d)``) by the same angles, in one kernel.

    cos, sin: broadcastable to each ``(..., n, r/2)``, ``r <= d`` (features past ``r`` pass
    through). ``inplace`` writes the results into ``xs`` and returns them. ``fused`` overrides
    ``POSENC_FUSED`` (None follows it). Inputs are assumed validated by the caller.
    """
    xs = tuple(xs)
    if inplace and torch.is_grad_enabled() and any(x.is_leaf and x.requires_grad for x in xs):
        raise ValueError("`inplace=True` cannot overwrite a leaf tensor that requires grad; pass inplace=False")
    if torch.compiler.is_compiling():
        out = tuple(rotate_expr(x, cos, sin, interleaved) for x in xs)
        return tuple(x.copy_(o) for x, o in zip(xs, out)) if inplace else out
    if _wants_kernel(fused, xs, cos, sin, interleaved):
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
            return _FusedRotation.apply(cos, sin, interleaved, inplace, *xs)
        out = _call_kernel(xs, cos, sin, interleaved, inplace)
        if out is not None:
            return out
    out = tuple(rotate_eager(x, cos, sin, interleaved) for x in xs)
    return tuple(x.copy_(o) for x, o in zip(xs, out)) if inplace else out


def rotate_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: ``(b, h, n, d)``, k: ``(b, h_kv, n, d)`` rotated at the same positions in one call."""
    if q.dtype != k.dtype or q.device != k.device:
        return (
            rotate_tensors((q,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0],
            rotate_tensors((k,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0],
        )
    q, k = rotate_tensors((q, k), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)
    return q, k
